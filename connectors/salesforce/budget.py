"""A pace for the org's API allowance: at most so many calls a minute, on average.

Salesforce counts every REST call against a rolling 24-hour allowance shared by every
integration of the org (typically 100,000 plus 1,000 per licence); past it, calls fail until
the window moves on. The CRM writer's flush wait bounds its calls only per flush: a steady
100 updates/s still means a read and a write every 0.2 s, ~9 calls/s or ~800,000 a day
(``paybus bench``, webhook -> CRM at 100/s). With ``salesforce.calls_per_minute`` set, the
writer and the poller share this budget: a call starts only when the budget is not in debt,
and what a call cost (known after it, from the client's count) is charged to it. Waiting
does not lose work: updates keep arriving while the writer waits, so the next batch is larger
and the same updates cost fewer calls; only their latency grows.

A token bucket with debt: ``burst`` calls may go at once after a quiet spell (so sporadic
traffic is not slowed), then the average is held to the rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class CallBudget:
    """At most ``per_minute`` calls a minute on average, ``burst`` at once after quiet."""

    def __init__(
        self,
        per_minute: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        #: Ten seconds' worth by default, and at least a read and a write.
        self.burst = burst if burst is not None else max(self.rate * 10.0, 2.0)
        self.clock = clock
        self.tokens = self.burst
        self.at = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def delay(self) -> float:
        """Seconds until the next call may start (0 when the budget is not in debt)."""
        self._refill()
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def spend(self, calls: float) -> None:
        """Charge ``calls`` made (the budget may go into debt: the next call waits it off)."""
        self._refill()
        self.tokens -= calls

    async def wait_turn(self) -> float:
        """Wait until a call may start; return the seconds waited."""
        waited = 0.0
        while (delay := self.delay()) > 0:
            await asyncio.sleep(delay)
            waited += delay
        return waited
