"""Logging for the command line and the server: one format, and third-party chatter kept at
DEBUG.

Start-up should say what it did in a few lines (store opened, live state rebuilt, model version
loaded, listening on URL). Some libraries log their own internals at INFO: faiss's loader tries
each CPU-specific build in turn and logs every failed try with a ``ModuleNotFoundError``, which
reads like a failure although the fallback it lands on is the intended one. Those records are
demoted to DEBUG here rather than dropped: ``--log-level debug`` still shows them.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Loggers whose INFO records describe the library's internals, not a step of ours.
CHATTY = ("faiss.loader", "faiss")


class DemoteToDebug(logging.Filter):
    """Rewrites a record's level to DEBUG, then lets it through only if DEBUG is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        # The logger's own level check already passed at INFO; this is the check at DEBUG.
        return logging.getLogger().isEnabledFor(record.levelno)


def setup(level: str = "info") -> None:
    """Configure the root logger once (a later call only changes the level)."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    logging.getLogger().setLevel(level.upper())
    for name in CHATTY:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DemoteToDebug) for f in logger.filters):
            logger.addFilter(DemoteToDebug())
