"""Offline evaluation: metrics, splits and replay, and the synthetic world."""
