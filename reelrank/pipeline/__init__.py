"""The feed pipeline: candidate sources -> filters -> scorer -> re-ranker (see feed.py)."""
