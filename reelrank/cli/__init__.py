"""The ``reelrank`` command line: demo, serve, trainer, import, simulate, train, eval.

Entry points are the only places that read settings and assemble objects; everything below them
takes explicit arguments.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="ReelRank: a real-time 'For You' feed engine for short video.",
    no_args_is_help=True, add_completion=False,
    # Markdown joins a paragraph's hard-wrapped docstring lines, so Rich wraps the text once to
    # the terminal's width; a blank line separates paragraphs.
    rich_markup_mode="markdown",
)

DATA_DIR_HELP = "Directory of the embedded store (SQLite file, keys, models)."
STORE_HELP = ("A store other than DATA_DIR's SQLite file: postgresql://user:password@host/db. "
              "Keys and models stay in DATA_DIR.")
PROGRESS_HELP = "Show progress bars (on stderr)."
MODELS_HELP = ("Where model versions go: a directory (default DATA_DIR/models) or "
               "postgresql://user:password@host/db, which trainers and servers on other hosts "
               "reach (docs/operations.md).")


def _logging(level: str) -> None:
    from reelrank import logs

    logs.setup(level)


# The commands, registered on ``app`` as their modules are imported (help lists them in this
# order).
from reelrank.cli import serving, training, data  # noqa: E402,F401
