"""Repeated client errors, logged once per window with a count, not dozens of times a second.

While Kafka is unreachable, aiokafka logs each failed fetch, metadata refresh and heartbeat:
about a hundred ERROR lines a second per worker (measured with the broker stopped), which
buries the one line that says what happened and fills the disk of whoever ships the logs.
:class:`RepeatFilter` lets the first record of a kind through, holds back the same kind for
``window_s``, and appends to the next one it lets through how many it held back. A kind is
the logger and the message template (``record.msg`` before its arguments are filled in), so
"Unable connect to node with id %s" is one kind whichever node it names.

Only the chatty client loggers (aiokafka, kafka, faust, mode) are throttled: paybus's own
warnings each mean something and are never held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: Loggers whose repeats are held back (by name prefix).
CHATTY = ("aiokafka", "kafka", "faust", "mode")


class RepeatFilter(logging.Filter):
    """Pass the first record of a kind per ``window_s``; count the others into the next."""

    def __init__(
        self,
        window_s: float = 10.0,
        prefixes: tuple[str, ...] = CHATTY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.prefixes = prefixes
        self.clock = clock
        #: kind -> (when its last record was let through, records held back since)
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def _chatty(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self.prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._chatty(record.name):
            return True
        kind = (record.name, str(record.msg))
        now = self.clock()
        passed_at, held = self._seen.get(kind, (None, 0))
        if passed_at is not None and now - passed_at < self.window_s:
            self._seen[kind] = (passed_at, held + 1)
            return False
        if held:
            assert passed_at is not None
            record.msg = (
                f"{record.msg} [and {held} more like it in the last {now - passed_at:.0f} s]"
            )
        self._seen[kind] = (now, 0)
        if len(self._seen) > 10_000:  # unbounded kinds (a message built with f-strings)
            self._seen.clear()
        return True


def install(handler: logging.Handler, window_s: float = 10.0) -> RepeatFilter:
    """Attach a :class:`RepeatFilter` to ``handler`` (a handler filter sees every logger's
    records, whatever logger they were logged on)."""
    throttle = RepeatFilter(window_s)
    handler.addFilter(throttle)
    return throttle
