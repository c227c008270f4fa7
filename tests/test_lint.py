"""The checks maintainers rely on, run with the tests: ruff's linter over the whole project,
ruff's formatter over the modules already in its style, and mypy over ``reelrank/``.

Their versions are pinned in pyproject.toml (the ``dev`` extra) and so is their configuration:
which rules, which modules mypy checks strictly, and which are not clean yet.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Under the formatter: the modules written in its style. The rest of the project keeps its own
# hand-wrapped style until each module is reformatted whole (then it joins this list).
FORMATTED = [
    "reelrank/__init__.py",
    "reelrank/logs.py",
    "reelrank/pipeline/context.py",
    "reelrank/pipeline/explain.py",
    "reelrank/pipeline/served.py",
    "reelrank/pipeline/side_effects.py",
    "reelrank/pipeline/traces.py",
    "reelrank/service/routes/creators.py",
    "reelrank/service/routes/ops.py",
    "reelrank/service/runtime.py",
    "reelrank/store/live.py",
    "reelrank/store/toplists.py",
    "reelrank/train/handover.py",
    "tests/conftest.py",
    "tests/test_metrics.py",
    "tests/service/conftest.py",
    "tests/store/test_live_contract.py",
    "tests/test_layers.py",
    "tests/test_lint.py",
]


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]' (it is pinned there)")
    return found


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_ruff_lint():
    done = _run(_tool("ruff"), "check", "--no-cache", "reelrank", "tests", "benchmarks")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format():
    done = _run(_tool("ruff"), "format", "--check", "--no-cache", *FORMATTED)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy():
    done = _run(_tool("mypy"))  # its cache (.mypy_cache, ignored by git) only makes it faster
    assert done.returncode == 0, done.stdout + done.stderr
