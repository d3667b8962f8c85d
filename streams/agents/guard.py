"""Keep an unexpected error from losing messages.

Faust acknowledges the message an agent was working on when the agent raises or is cancelled
(its stream iterators ack in ``finally``; ``take_events`` acks the whole batch), so an exception
escaping a stage would silently skip work that was never done. Every stage runs its unit of
work through :func:`guarded`: an unexpected error is logged and counted, and the same work is
tried again after a pause (every stage is idempotent: the sequencer re-derives the same
updates, connectors reuse the same idempotency keys, the CRM writer is version-guarded). If it
keeps failing, or the work is cancelled half-way (a shutdown in the middle of a batch), the
worker exits at once, before Faust can commit the acknowledgement: the messages are delivered
again to whichever worker takes the partitions, as after a kill -9.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

from streams import metrics

log = logging.getLogger(__name__)

#: Exit status of a worker that gave up on a unit of work (EX_SOFTWARE).
EXIT_UNFINISHED = 70


def _exit_unfinished(stage: str, why: str) -> None:
    log.critical("%s: %s; exiting without acknowledging the unfinished work", stage, why)
    logging.shutdown()
    os._exit(EXIT_UNFINISHED)


async def guarded(
    stage: str,
    work: Callable[..., Awaitable[object]],
    *args: object,
    attempts: int = 5,
    first_delay_s: float = 0.5,
) -> None:
    """Run ``work(*args)``; retry it on an unexpected error; exit rather than lose it."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            await work(*args)
            return
        except asyncio.CancelledError:
            _exit_unfinished(stage, "cancelled in the middle of its work")
        except Exception:
            metrics.STAGE_ERRORS.labels(stage).inc()
            log.exception("%s: unexpected error (attempt %d of %d)", stage, attempt, attempts)
            if attempt == attempts:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    _exit_unfinished(stage, f"still failing after {attempts} attempts")
