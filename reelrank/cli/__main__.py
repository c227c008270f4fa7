"""``python -m reelrank.cli``: the same commands as ``reelrank``."""

from reelrank.cli import app

app()
