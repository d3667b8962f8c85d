"""The stage guard: retry unexpected errors, and exit rather than let Faust ack unfinished work."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from streams.agents.guard import EXIT_UNFINISHED, guarded
from streams.metrics import STAGE_ERRORS


def test_a_passing_error_is_retried_and_counted() -> None:
    calls: list[int] = []

    async def flaky(n: int) -> None:
        calls.append(n)
        if len(calls) < 3:
            raise RuntimeError("broker hiccup")

    before = STAGE_ERRORS.labels("test-flaky")._value.get()
    asyncio.run(guarded("test-flaky", flaky, 7, first_delay_s=0.01))
    assert calls == [7, 7, 7]
    assert STAGE_ERRORS.labels("test-flaky")._value.get() - before == 2


def _run(body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        """
        import asyncio, logging, sys
        logging.basicConfig(stream=sys.stderr)
        from streams.agents.guard import guarded
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )


def test_persistent_failure_exits_the_worker_unacknowledged() -> None:
    result = _run(
        """
        async def broken():
            raise ValueError("always")
        asyncio.run(guarded("stage-x", broken, attempts=2, first_delay_s=0.01))
        print("not reached")
        """
    )
    assert result.returncode == EXIT_UNFINISHED
    assert "not reached" not in result.stdout
    assert "still failing after 2 attempts" in result.stderr


def test_cancellation_mid_work_exits_instead_of_acking() -> None:
    result = _run(
        """
        async def slow():
            await asyncio.sleep(10)
        async def main():
            task = asyncio.ensure_future(guarded("stage-y", slow))
            await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.sleep(1)
            print("not reached")
        asyncio.run(main())
        """
    )
    assert result.returncode == EXIT_UNFINISHED
    assert "cancelled in the middle of its work" in result.stderr
