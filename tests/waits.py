"""Waiting on a state, never on the clock: a test's deadline only bounds a hang, it never decides a verdict.

A loaded machine makes every step slower but changes no order of events, so a test waits for the event it needs
(a session waiting on a lock, a thread ending) however long that takes, and gives up only after :data:`HANG_S`,
far beyond any load seen, with a message that says it hung.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import text

__all__ = ["HANG_S", "until", "lock_wait_before_end", "joined"]

HANG_S = 900.0

_LOCK_WAITS = text("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND wait_event_type = 'Lock'")


def until(condition: Callable[[], bool], what: str, poll_s: float = 0.05) -> None:
    """Return once ``condition()`` holds; fail (a hang) after :data:`HANG_S` seconds."""
    deadline = time.monotonic() + HANG_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"hung: {what} did not happen in {HANG_S:.0f} s")
        time.sleep(poll_s)


def lock_wait_before_end(engine, thread: threading.Thread) -> bool:
    """Whether a session of ``engine``'s PostgreSQL database waits on a lock before ``thread`` ends.

    True as soon as one does; False when ``thread`` ended without one being seen (it never waited).
    """
    seen = []

    def settled() -> bool:
        with engine.connect() as connection:  # a transaction per look: PostgreSQL keeps a snapshot of the activity
            if connection.execute(_LOCK_WAITS).scalar_one():
                seen.append(True)
                return True
        return not thread.is_alive()

    until(settled, "neither a lock wait nor the end of the waiting thread")
    return bool(seen)


def joined(thread: threading.Thread) -> threading.Thread:
    """``thread`` after it ended; fail (a hang) if it runs past :data:`HANG_S`."""
    thread.join(timeout=HANG_S)
    assert not thread.is_alive(), f"hung: thread {thread.name} still runs after {HANG_S:.0f} s"
    return thread
