"""ReelRank: a real-time "For You" feed engine for short video."""

__version__ = "0.1.0"
