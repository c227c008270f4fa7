"""The leader lease on PostgreSQL: one holder at a time; a holder whose session ends (its
process killed, its connection cut by the server) frees the lease for a standby, and learns
that it lost it; every new holder gets a higher epoch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from reelrank.store.lease import Lease
from tests.pg import throwaway_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def url():
    with throwaway_database() as u:
        yield u


def test_one_holder_at_a_time_and_release_hands_over(url):
    with Lease(url, "trainer", "a") as a, Lease(url, "trainer", "b") as b, \
            Lease(url, "other", "c") as c:
        assert a.try_acquire() and a.held() and a.epoch == 1
        assert a.try_acquire() and a.epoch == 1  # holding already: the same hold
        assert not b.try_acquire() and not b.held() and b.epoch is None
        assert not b.acquire(timeout_s=0.3, poll_s=0.1)
        assert c.try_acquire()  # another name is another lease
        assert b.current_holder() == ("a", 1)
        a.release()
        assert not a.held()
        assert b.try_acquire() and b.epoch == 2 and b.current_holder() == ("b", 2)
        assert not a.try_acquire()


def test_a_holder_whose_connection_is_cut_loses_the_lease_to_the_standby(url):
    with Lease(url, "trainer", "a") as a, Lease(url, "trainer", "b") as b:
        assert a.try_acquire() and not b.try_acquire()
        with psycopg.connect(url, autocommit=True) as admin:
            pids = [r[0] for r in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = "
                "'reelrank-lease-trainer' AND pid IN (SELECT pid FROM pg_locks WHERE "
                "locktype = 'advisory' AND granted)").fetchall()]
            assert len(pids) == 1  # a's session, the one holding the lock
            admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
        assert b.acquire(timeout_s=10, poll_s=0.05) and b.epoch == 2
        assert not a.held()  # a finds out, and stops acting as the holder
        assert not a.try_acquire()  # it reconnects, and b has it


def test_killing_the_holding_process_lets_the_standby_take_over(url):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from reelrank.store.lease import Lease
            lease = Lease({url!r}, "trainer", "child")
            assert lease.try_acquire()
            print("held", lease.epoch, flush=True)
            time.sleep(120)
        """)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().split() == ["held", "1"]
        with Lease(url, "trainer", "standby") as standby:
            assert not standby.try_acquire()
            assert not standby.acquire(timeout_s=0.5, poll_s=0.1)
            holder.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            assert standby.acquire(timeout_s=10, poll_s=0.05)
            assert time.monotonic() - killed < 10 and standby.epoch == 2
            assert standby.current_holder() == ("standby", 2)
    finally:
        holder.kill()
        holder.wait(10)
