"""The write gate across processes (``store/shared.py``): writers run together, a swap waits
for the writes in flight and holds new ones back, and a writer whose process died stops
counting after its time to live."""

from __future__ import annotations

import threading
import time

import pytest

from reelrank.store.shared import WriteGate
from tests.rd import throwaway_prefix

redis = pytest.importorskip("redis")


@pytest.fixture
def client_and_prefix():
    with throwaway_prefix() as (url, prefix):
        client = redis.Redis.from_url(url)
        yield client, prefix
        client.close()


def test_a_swap_waits_for_writes_in_flight_and_holds_new_ones_back(client_and_prefix):
    client, prefix = client_and_prefix
    one, two = WriteGate(client, prefix), WriteGate(client, prefix)  # two processes
    order: list[str] = []
    with one.writing(), two.writing():  # writers do not exclude each other
        swapper = threading.Thread(target=lambda: _swap(one, order))
        swapper.start()
        time.sleep(0.2)
        order.append("writes end")
    swapper.join(10)
    assert order[:2] == ["writes end", "swap"]

    at_swap, done = threading.Event(), threading.Event()

    def long_swap() -> None:
        with one.swapping():
            at_swap.set()
            done.wait(10)

    swapper = threading.Thread(target=long_swap)
    swapper.start()
    assert at_swap.wait(10)
    wrote: list[float] = []
    writer = threading.Thread(target=lambda: _write(two, wrote))
    writer.start()
    time.sleep(0.2)
    assert wrote == []  # held back
    done.set()
    swapper.join(10)
    writer.join(10)
    assert len(wrote) == 1


def test_a_writer_that_died_stops_counting_after_its_time_to_live(client_and_prefix):
    client, prefix = client_and_prefix
    gate = WriteGate(client, prefix, ttl_s=0.3)
    section = gate.writing()
    section.__enter__()  # its process dies inside: never leaves
    started = time.monotonic()
    with gate.swapping():
        waited = time.monotonic() - started
    assert 0.2 < waited < 5


def _swap(gate: WriteGate, order: list[str]) -> None:
    with gate.swapping():
        order.append("swap")


def _write(gate: WriteGate, wrote: list[float]) -> None:
    with gate.writing():
        wrote.append(time.monotonic())
