"""HTTP routes by area: catalog and events, feed/rank/explain, users, operations."""
