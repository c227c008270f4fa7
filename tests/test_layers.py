"""The import rules of the package (docs/design.md, "Dependency directions"), checked on the
source: every ``import`` statement, at module level or inside a function, counts.

- ``engine.py``, the serving core, imports nothing from ``train/``, ``service/`` or ``eval/``;
- no module outside ``store/`` imports a live-state backend (``store/memory.py``): they type
  against ``store/live.py`` and build states with ``reelrank.store.new_live_state``; entry
  points, which choose backends, are exempt;
- ``pipeline/`` never imports ``train/``; ``store/`` imports neither ``pipeline/``, ``train/``,
  ``eval/`` nor ``service/``; ``types.py`` imports nothing of the package;
- ``models/`` imports nothing of the package but ``models/`` and ``types.py``; nothing but
  ``eval/`` itself and entry points imports ``eval/`` (training and serving share the metric
  functions through ``metrics.py``); only entry points and ``service/runtime.py`` import the
  online trainer (``train/trainer.py``, ``train/supervisor.py``): only they start trainers;
- no module is over 450 lines.

What does not follow a rule yet is listed with the reason in ``PENDING``; a listed module that
follows its rule fails the test, so that the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reelrank"
MAX_LINES = 450
ENTRY_POINTS = {
    "cli/__init__.py",
    "cli/__main__.py",
    "cli/serving.py",
    "cli/training.py",
    "cli/data.py",
    "service/server.py",
}
TRAINER_STARTERS = ENTRY_POINTS | {"service/runtime.py"}  # the runtime the entry points assemble

# Modules that break a rule today, each with its rule and why: (module, rule) -> reason. Those
# another change is rewriting right now (IN_FLUX) may also follow the rule before their entry
# goes; the others must leave the list as soon as they follow it.
IN_FLUX = "in flux: being changed by other work"
PENDING: dict[tuple[str, str], str] = {}


def modules() -> dict[str, Path]:
    return {p.relative_to(PACKAGE).as_posix(): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every module name an import statement in ``path`` names (``from a import b`` gives
    ``a`` and ``a.b``: b may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def breaks(module: str, path: Path) -> set[str]:
    """The rules ``module`` breaks."""
    found = imports(path)
    broken = set()
    if module == "engine.py" and any(
        _under(n, "reelrank.train", "reelrank.service", "reelrank.eval") for n in found
    ):
        broken.add("engine-core")
    if (
        not module.startswith("store/")
        and module not in ENTRY_POINTS
        and any(_under(n, "reelrank.store.memory") for n in found)
    ):
        broken.add("no-backend")
    if module.startswith("pipeline/") and any(_under(n, "reelrank.train") for n in found):
        broken.add("pipeline-no-train")
    if module.startswith("store/") and any(
        _under(n, "reelrank.pipeline", "reelrank.train", "reelrank.eval", "reelrank.service")
        for n in found
    ):
        broken.add("store-below")
    if module == "types.py" and any(_under(n, "reelrank") for n in found):
        broken.add("types-leaf")
    if module.startswith("models/") and any(
        _under(n, "reelrank") and not _under(n, "reelrank.models", "reelrank.types") for n in found
    ):
        broken.add("models-pure")
    if (
        not module.startswith("eval/")
        and module not in ENTRY_POINTS
        and any(_under(n, "reelrank.eval") for n in found)
    ):
        broken.add("eval-on-top")
    if (
        not module.startswith("train/")
        and module not in TRAINER_STARTERS
        and any(_under(n, "reelrank.train.trainer", "reelrank.train.supervisor") for n in found)
    ):
        broken.add("trainers-by-entry-points")
    if len(path.read_text().splitlines()) > MAX_LINES:
        broken.add("size")
    return broken


@pytest.mark.parametrize("module", sorted(modules()))
def test_module_follows_the_import_rules(module):
    path = modules()[module]
    pending = {rule for (m, rule) in PENDING if m == module}
    broken = breaks(module, path)
    assert broken <= pending, f"{module} breaks {sorted(broken - pending)}"
    strict = {rule for rule in pending if not PENDING[module, rule].startswith(IN_FLUX)}
    assert strict <= broken, (
        f"{module} follows {sorted(strict - broken)} now: remove it from PENDING"
    )


def test_the_rules_see_lazy_imports(tmp_path):
    """An import inside a function counts as much as one at the top."""
    path = tmp_path / "engine.py"
    path.write_text("def f():\n    from reelrank.train.batch import train_from_store\n")
    assert breaks("engine.py", path) == {"engine-core"}
    path.write_text("from reelrank.store import memory\n")
    assert breaks("insights.py", path) == {"no-backend"}
    assert breaks("cli/serving.py", path) == set()
    path.write_text("from reelrank.eval.metrics import auc\n")
    assert breaks("train/batch.py", path) == {"eval-on-top"}
    assert breaks("eval/harness.py", path) == set()
