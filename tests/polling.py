"""Waiting for something another thread or process does."""

import time


def wait_for(check, timeout: float = 10.0, interval: float = 0.02):
    """``check()``'s first truthy value, polled every ``interval`` s; its last (falsy) value
    once ``timeout`` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
