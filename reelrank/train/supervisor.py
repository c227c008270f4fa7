"""The online trainer as a child process of the API server: the single-process default.

A trainer thread inside the API process competes with request threads for the interpreter
lock: every tensor operation of a request gives the lock up and may wait milliseconds to get it
back, so the feed's p99 grew tenfold while the trainer learned (benchmarks/results/realtime.md).
As its own process it shares nothing but the store and the model registry, and the operating
system schedules it below the API (it runs niced).

``TrainerProcess`` starts ``reelrank trainer`` on the server's data directory, restarts it when
it exits (with a back-off), and stops it with the server. The two speak JSON lines, one object
per line, so an id travels intact whatever it holds (tabs, newlines, quotes, any script):

    server -> child (its stdin):   {"command": "erase", "user_id": "..."}   drop the viewer's
                                   pending rows and state (erasure)
                                   {"command": "reset", "user_id": "..."}   forget the viewer's
                                   inferred interests ("refresh my feed")
    child -> server (its stdout):  {"ack": "erase", "user_id": "..."} once the trainer holds
                                   the command, or {"error": "..."} for a line it could not use

A text format split on tabs could not carry an id with a tab or a newline, and such a command
used to be dropped without a word. The child writes its human-readable messages to stderr, so
its stdout is the channel alone; a line there that is not JSON is logged, not trusted.

The child exits when its standard input closes, so it never outlives the server, even one that
was killed. A command sent while the child is restarting is not lost in effect: a new child
rebuilds its state from the store, where the erasure or the reset already happened.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Callable, Iterable, Protocol

log = logging.getLogger(__name__)

STATUS_FILE = "trainer-status.json"  # in the data directory, rewritten every 2 s by the child
COMMANDS = ("erase", "reset")


# -- the channel --------------------------------------------------------------------------------
def encode_command(command: str, user_id: str) -> bytes:
    """One command as one line. ``ensure_ascii`` escapes every newline, tab and non-ASCII
    character (a lone surrogate included), so the line is plain ASCII ending in its only
    newline."""
    if command not in COMMANDS:
        raise ValueError(f"unknown trainer command {command!r}")
    return (json.dumps({"command": command, "user_id": user_id}, ensure_ascii=True)
            + "\n").encode("ascii")


def decode_command(line: str) -> tuple[str, str]:
    """``(command, user_id)`` of one line; ``ValueError`` saying why for anything else."""
    message = json.loads(line)  # json.JSONDecodeError is a ValueError
    if not isinstance(message, dict):
        raise ValueError("a command is a JSON object")
    command, user_id = message.get("command"), message.get("user_id")
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    return command, user_id


def id_digest(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class CommandTarget(Protocol):
    def forget_user(self, user_id: str) -> None: ...

    def reset_user(self, user_id: str) -> None: ...


def serve_commands(lines: Iterable[str], target: CommandTarget, replies: IO[str] | None) -> None:
    """The child's side: apply each command line to ``target`` (the online trainer) and answer
    it on ``replies``, until ``lines`` ends (the server closed the pipe)."""
    for line in lines:
        if not line.strip():
            continue
        try:
            command, user_id = decode_command(line)
        except ValueError as exc:
            log.warning("ignoring a trainer command line that is not valid: %s", exc)
            _reply(replies, {"error": f"not a valid command: {exc}"})
            continue
        if command == "erase":
            target.forget_user(user_id)
        else:
            target.reset_user(user_id)
        _reply(replies, {"ack": command, "user_id": user_id})


def _reply(replies: IO[str] | None, message: dict) -> None:
    if replies is None:
        return
    try:
        replies.write(json.dumps(message, ensure_ascii=True) + "\n")
        replies.flush()
    except (OSError, ValueError):
        pass  # the server is gone; the loop ends when stdin closes


class TrainerProcess:
    # Every 2 s: each version costs the server a swap (15-30 ms of interpreter-locked work),
    # and the server swaps a version in within a quarter second of its publication.
    def __init__(self, data_dir: Path, *, publish_every_s: float = 2.0,
                 retrieval_every_s: float = 120.0, log_level: str = "warning",
                 backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0),
                 max_viewers: int | None = None, late_examples: int | None = None):
        self.data_dir = Path(data_dir)
        # The child's memory budgets (``reelrank trainer --max-viewers/--late-examples``);
        # None leaves the child's own default.
        self.max_viewers = max_viewers
        self.late_examples = late_examples
        self.publish_every_s = publish_every_s
        self.retrieval_every_s = retrieval_every_s
        self.log_level = log_level
        self.backoff_s = backoff_s
        self.restarts = 0
        self.last_exit: int | None = None
        self.commands_sent = 0
        self.commands_acknowledged = 0
        # The latest acknowledged (command, id_digest(user_id)), oldest first: how a test or an
        # operator checks that an erasure arrived. Digests, not ids: an erased viewer's id
        # must not linger in the server's memory.
        self.recent_acks: deque[tuple[str, str]] = deque(maxlen=32)
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()  # one writer on the child's stdin at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "TrainerProcess":
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._supervise, name="trainer-process",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._close_stdin(proc)  # the child's signal to finish its step and exit
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def status(self) -> dict:
        """The supervisor's view, with the child's own status (state, steps, rows waiting,
        lags) from the file it rewrites every 2 s, when there is a recent one."""
        out = {"mode": "process", "alive": self.alive, "pid": self.pid,
               "restarts": self.restarts, "last_exit": self.last_exit,
               "commands_sent": self.commands_sent,
               "commands_acknowledged": self.commands_acknowledged}
        try:
            child = json.loads((self.data_dir / STATUS_FILE).read_text())
        except (OSError, ValueError):
            return out
        if self.alive and time.time() - child.get("written_at", 0) < 10:
            out.update({k: v for k, v in child.items() if k not in out})
        return out

    # -- commands -----------------------------------------------------------------------------
    def forget_user(self, user_id: str) -> None:
        """Erasure step (``service/runtime.py`` adds it to ``Engine.effects``)."""
        self._send("erase", user_id)

    def reset_user(self, user_id: str) -> None:
        """Reset step ("refresh my feed"; added with ``forget_user``)."""
        self._send("reset", user_id)

    def _send(self, command: str, user_id: str) -> None:
        line = encode_command(command, user_id)
        proc = self._proc
        if proc is None or proc.poll() is not None or proc.stdin is None:
            return  # a restarting child reads the store afresh
        try:
            with self._lock:
                proc.stdin.write(line)
                proc.stdin.flush()
                self.commands_sent += 1
        except (BrokenPipeError, OSError, ValueError):
            pass  # it died just now; the next one starts from the store

    def _read_replies(self, proc: subprocess.Popen) -> None:
        """The child's stdout: acknowledgements counted, anything else logged."""
        assert proc.stdout is not None
        for raw in proc.stdout:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                message = json.loads(text)
            except ValueError:
                message = None
            if isinstance(message, dict) and message.get("ack") in COMMANDS:
                self.commands_acknowledged += 1
                digest = id_digest(str(message.get("user_id")))
                self.recent_acks.append((message["ack"], digest))
            elif isinstance(message, dict) and "error" in message:
                log.warning("the trainer refused a command: %s", message["error"])
            elif text.strip():
                log.info("trainer: %s", text)

    # -- the supervisor thread ----------------------------------------------------------------
    def _command(self) -> list[str]:
        budgets = []
        if self.max_viewers is not None:
            budgets += ["--max-viewers", str(self.max_viewers)]
        if self.late_examples is not None:
            budgets += ["--late-examples", str(self.late_examples)]
        return [sys.executable, "-m", "reelrank.cli", "trainer",
                "--data-dir", str(self.data_dir),
                "--publish-every", str(self.publish_every_s),
                "--retrieval-every", str(self.retrieval_every_s),
                "--log-level", self.log_level, *budgets, "--commands-from-stdin"]

    def _supervise(self) -> None:
        failures = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                proc = subprocess.Popen(self._command(), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=_child_env())
            except OSError:
                log.exception("could not start the trainer process")
                proc = None
            if proc is not None:
                threading.Thread(target=self._read_replies, args=(proc,), daemon=True,
                                 name="trainer-replies").start()
                self._proc = proc
                if self._stop.is_set():  # stop() ran while this one was starting
                    self._close_stdin(proc)
                code = proc.wait()
                self.last_exit = code
                if self._stop.is_set():
                    break
                log.warning("the trainer process exited with %s; restarting it", code)
                self.restarts += 1
            # A child that ran a good while before it died starts again at once; one that keeps
            # dying backs off.
            failures = 0 if time.monotonic() - started > 60 else failures + 1
            if failures:
                self._stop.wait(self.backoff_s[min(failures, len(self.backoff_s)) - 1])

    @staticmethod
    def _close_stdin(proc: subprocess.Popen) -> None:
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass


def _child_env() -> dict:
    """The child imports the same ``reelrank`` as this process, installed or not."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# -- the child ----------------------------------------------------------------------------------
def run_trainer(runner, data_dir: Path, commands_from_stdin: bool,
                say: Callable[..., None]) -> None:
    """Run ``runner`` (an ``OnlineTrainer``) as ``reelrank trainer``'s process until SIGINT or
    SIGTERM, or, with ``commands_from_stdin`` (the child of ``reelrank serve``), until standard
    input closes; commands read there reach it and are acknowledged on standard output. Every
    2 s its status goes to ``STATUS_FILE`` in ``data_dir``, which the server reads for
    ``GET /v1/admin/trainer`` (it cannot ask this process). ``say(text, err=...)`` prints."""
    import signal

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    runner.start()
    if commands_from_stdin:
        def read_commands() -> None:
            serve_commands(sys.stdin, runner, sys.stdout)
            done.set()  # the server is gone (or stopping us): so are we

        threading.Thread(target=read_commands, name="trainer-commands", daemon=True).start()
    # A registry in a database names its (redacted) URL; a directory registry, its directory.
    target = getattr(runner.registry, "url", None) or data_dir / "models"
    lease = getattr(runner, "lease", None)
    standby = f", while it holds the {lease.name!r} lease" if lease is not None else ""
    say(f"online trainer on {data_dir}: publishing to {target}{standby}",
        err=commands_from_stdin)  # stdout is then the server's channel
    status_file = data_dir / STATUS_FILE
    try:
        ticks = 0
        while not done.wait(2.0):
            status = runner.status()
            tmp = status_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({**status, "written_at": time.time()}, default=str))
            tmp.replace(status_file)
            ticks += 1
            # Standalone, a status line now and then shows the trainer is alive; as the child
            # of `reelrank serve`, GET /v1/admin/trainer shows the same and the console stays
            # quiet.
            if ticks % 15 == 0 and not commands_from_stdin:
                say(f"trainer: {status}")
    finally:
        runner.stop()
