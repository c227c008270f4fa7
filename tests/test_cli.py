"""The command line: every subcommand's help, the flags shared between subcommands, and
``simulate --no-progress``."""

from __future__ import annotations

import pytest
import typer.main
from typer.core import TyperOption
from typer.testing import CliRunner

from reelrank.cli import DATA_DIR_HELP, app

COMMAND = typer.main.get_command(app)
SUBCOMMANDS = sorted(COMMAND.commands)
runner = CliRunner()


def test_every_subcommand_is_listed_and_known():
    assert {"serve", "trainer", "import", "simulate", "train", "eval", "audit",
            "demo"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_exits_0(name):
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "100"}, prog_name="reelrank")
    assert result.exit_code == 0, result.output
    assert f"reelrank {name}" in result.output


def _options(name: str) -> dict[str, TyperOption]:
    return {p.name: p for p in COMMAND.commands[name].params if isinstance(p, TyperOption)}


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_shared_flags_mean_the_same_everywhere(name):
    options = _options(name)
    if "data_dir" in options:
        assert options["data_dir"].opts == ["--data-dir"]
        assert options["data_dir"].help == DATA_DIR_HELP
    if "progress" in options:
        # A switch pair on every command that shows bars: --progress / --no-progress.
        assert options["progress"].opts == ["--progress"]
        assert options["progress"].secondary_opts == ["--no-progress"]
        assert options["progress"].default is True
    if "seed" in options:
        assert options["seed"].opts == ["--seed"] and isinstance(options["seed"].default, int)


def test_commands_that_build_or_read_data_take_progress_and_seed():
    for name in ("import", "simulate", "train", "eval", "audit", "demo"):
        assert "progress" in _options(name), name
    for name in ("simulate", "train", "eval", "audit", "demo"):
        assert "seed" in _options(name), name


def test_help_is_wrapped_once_to_the_terminal():
    # A docstring paragraph hard-wrapped in the source comes out as one line on a wide
    # terminal: Rich wraps it, the source's line breaks do not survive.
    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0
    line = next(l for l in result.output.splitlines() if "On first start" in l)
    assert "DATA_DIR/keys.json; the store keeps only their hashes." in line
    assert "swapped in without a restart" in " ".join(result.output.split())


def test_simulate_takes_no_progress(tmp_path):
    result = runner.invoke(app, ["simulate", "--data-dir", str(tmp_path / "d"), "--users", "5",
                                 "--items", "30", "--creators", "3", "--sessions", "1",
                                 "--swipes", "3", "--seed", "3", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "synthetic world: 30 items" in result.output
    assert "it/s" not in result.output and "events/s" not in result.output  # no bars


def test_the_server_module_runs_the_one_serve_command(monkeypatch):
    """``python -m reelrank.service.server ARGS`` is ``reelrank serve ARGS``: no second parser."""
    import reelrank.cli
    from reelrank.service import server

    seen = []
    monkeypatch.setattr(reelrank.cli, "app", lambda args, prog_name: seen.append(args))
    server.main(["--data-dir", "d", "--port", "9"])
    assert seen == [["serve", "--data-dir", "d", "--port", "9"]]
