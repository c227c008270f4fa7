"""The JSON-lines channel between the server and its trainer child (train/supervisor.py): every
erasure and reset arrives with the id it was sent with, whatever the id holds."""

from __future__ import annotations

import io
import json
import time

import pytest

from reelrank.train.supervisor import (
    TrainerProcess, decode_command, encode_command, id_digest, serve_commands,
)

HOSTILE = [
    "tab\there",
    "new\nline",
    "both\t\n\r",
    'quo"tes\' and \\backslash',
    '{"command": "erase", "user_id": "someone else"}',
    "用户 ünïcödé 👩‍👩‍👧",
    "\u202eoverride",
    "lone \ud800 surrogate",
    " spaced ",
]


@pytest.mark.parametrize("user_id", HOSTILE)
def test_any_id_round_trips_on_one_line(user_id):
    for command in ("erase", "reset"):
        line = encode_command(command, user_id)
        assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
        assert decode_command(line.decode()) == (command, user_id)


class Recorder:
    def __init__(self):
        self.calls = []

    def forget_user(self, user_id):
        self.calls.append(("forget", user_id))

    def reset_user(self, user_id):
        self.calls.append(("reset", user_id))


def test_the_child_side_applies_and_acknowledges_each_command():
    lines = [encode_command("erase", HOSTILE[1]).decode(), "\n", "erase\tu1\n",
             '{"command": "drop", "user_id": "u1"}\n', '{"command": "reset", "user_id": ""}\n',
             encode_command("reset", HOSTILE[0]).decode()]
    target, replies = Recorder(), io.StringIO()
    serve_commands(lines, target, replies)
    assert target.calls == [("forget", HOSTILE[1]), ("reset", HOSTILE[0])]
    answers = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert answers[0] == {"ack": "erase", "user_id": HOSTILE[1]}
    assert [set(a) for a in answers[1:4]] == [{"error"}] * 3  # the old text format included
    assert answers[4] == {"ack": "reset", "user_id": HOSTILE[0]}


def test_hostile_ids_reach_the_real_trainer_child(tmp_path):
    """``reelrank trainer --commands-from-stdin`` as the server runs it: each command is
    acknowledged by the child after its trainer's forget_user / reset_user took the id."""
    supervisor = TrainerProcess(tmp_path / "data", backoff_s=(0.1,)).start()
    try:
        deadline = time.monotonic() + 60
        while not supervisor.alive:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sent = []
        for user_id in HOSTILE[:6]:
            supervisor.forget_user(user_id)
            supervisor.reset_user(user_id)
            sent += [("erase", user_id), ("reset", user_id)]
        deadline = time.monotonic() + 60
        while supervisor.commands_acknowledged < len(sent):
            assert supervisor.restarts == 0, "the trainer child exited"
            assert time.monotonic() < deadline, (supervisor.commands_sent,
                                                 supervisor.commands_acknowledged)
            time.sleep(0.05)
        assert supervisor.commands_sent == len(sent)
        # Every id arrived exactly as sent (the supervisor keeps only digests of them).
        assert list(supervisor.recent_acks) == [(c, id_digest(u)) for c, u in sent]
        status = supervisor.status()
        assert status["commands_sent"] == status["commands_acknowledged"] == len(sent)
    finally:
        supervisor.stop()
    assert not supervisor.alive


def test_the_child_gets_the_servers_memory_budgets(tmp_path):
    from typer.testing import CliRunner

    from reelrank.cli import app

    proc = TrainerProcess(tmp_path, max_viewers=1234, late_examples=56)
    argv = proc._command()
    assert argv[argv.index("--max-viewers") + 1] == "1234"
    assert argv[argv.index("--late-examples") + 1] == "56"
    # The child's command line parses: every option it passes exists (``--help`` stops it
    # before it would start a trainer).
    args = argv[argv.index("trainer"):]
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "--max-viewers" not in TrainerProcess(tmp_path)._command()  # the child's default
