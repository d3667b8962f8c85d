"""The retry stage's handling of envelopes parked for refused credentials, on fakes (no
Faust app): what a worker started after they were parked does with them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from connectors.errors import AuthenticationError, NotFoundError
from streams import metrics, parking
from streams.agents.retry import RetryStage
from streams.parking import RetryQueue
from streams.records import PaymentCommand, RetryEnvelope

KEY = "payment:pay-1"
SCHEDULE = (600.0, 600.0, 600.0)


def _origin(offset: int) -> str:
    return parking.origin_id("commands.gocardless", 0, offset)


class FakeShared:
    """The parked table, and an executor that answers ``answer`` (None: carried out)."""

    def __init__(self, answer: Exception | None) -> None:
        self.parked: dict[str, Any] = {}
        self.answer = answer
        self.calls = 0
        self.parks: list[dict[str, Any]] = []

    def listed(self, key: str) -> list[str]:
        return parking.pending(self.parked.get(key))

    async def execute(self, psp: str, event: Any, command: Any, stage: str) -> Any:
        self.calls += 1
        return self.answer

    async def park(self, event: Any, key: str, **kwargs: Any) -> None:
        self.parks.append(kwargs)


class FakeEvent:
    """A consumed envelope (weakly referenced as the current event by table writes)."""

    def __init__(self, key: str, value: RetryEnvelope, message: Any) -> None:
        self.key, self.value, self.message = key, value, message


class FakeStream:
    def __init__(self) -> None:
        self.acked: list[Any] = []

    async def ack(self, event: Any) -> None:
        self.acked.append(event)


class FakeApp:
    """Settings, and the dead letters sent."""

    def __init__(self) -> None:
        self.settings = SimpleNamespace(retry_schedule_s=SCHEDULE, ops=SimpleNamespace())
        self.topic_map = SimpleNamespace(dlq=SimpleNamespace(name="dlq"))
        self.letters: list[Any] = []

    async def send(self, topic: str, *, key: bytes, value: Any) -> asyncio.Future[None]:
        self.letters.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _stage(shared: FakeShared, started_at: datetime) -> RetryStage:
    stage = RetryStage.__new__(RetryStage)
    stage.app = FakeApp()  # type: ignore[assignment]
    stage.shared = shared  # type: ignore[assignment]
    stage.queue = RetryQueue()
    stage.busy = set()
    stage.tasks = set()
    stage.stream = FakeStream()
    stage.batch_size = stage.budget = 10
    stage.started_at = started_at
    stage.refused_psps = set()
    stage.own_keys = {}
    command = PaymentCommand(
        command_id="cmd-1", aggregate_id="pay-1", aggregate_type="payment",
        operation="create_payment", psp="gocardless", issued_at=started_at,
    )  # fmt: skip
    stage._command = lambda env: command  # type: ignore[method-assign]
    return stage


def _envelope(
    origin_offset: int, attempt: int, due_at: datetime, parked_at: datetime, key: str = KEY
) -> Any:
    env = RetryEnvelope(
        retry_id=parking.retry_id(_origin(origin_offset), attempt), aggregate_id="pay-1",
        original_topic="commands.gocardless", original_partition=0,
        original_offset=origin_offset, value=b"", attempt=attempt, due_at=due_at,
        first_failed_at=parked_at, error="401", stage=parking.RETRY, key=key.encode(),
    )  # fmt: skip
    message = SimpleNamespace(
        headers=[(parking.PARKED_FOR_HEADER, parking.CREDENTIALS.encode())],
        timestamp=parked_at.timestamp(),
        tp=("retry", 0),
    )
    return FakeEvent(key, env, message)


def _rechecks() -> float:
    return metrics.RETRIES.labels("retry", "credentials_recheck")._value.get()


async def _tick(stage: RetryStage) -> None:
    await stage.tick()
    await asyncio.gather(*stage.tasks)


async def test_a_command_read_again_in_several_envelopes_is_one_recheck() -> None:
    # read from the committed offset after a restart: an attempt already superseded, the
    # attempt that stands, and an envelope whose command was finished meanwhile
    now = datetime.now(UTC)
    started, before = now - timedelta(seconds=1), now - timedelta(minutes=5)
    shared = FakeShared(answer=None)
    shared.parked[KEY] = {"pending": [_origin(1)], "stages": {_origin(1): parking.RETRY}}
    stage = _stage(shared, started)
    due = now + timedelta(minutes=5)
    for envelope in (
        _envelope(0, 1, due, before),  # finished: no longer listed
        _envelope(1, 1, due, before),
        _envelope(1, 2, due, before),
    ):
        await stage.offer(envelope)
    counted = _rechecks()
    await _tick(stage)
    assert shared.calls == 1
    assert _rechecks() - counted == 1


async def test_a_recheck_refused_again_waits_for_its_scheduled_retry() -> None:
    # a worker started with the key still wrong (a rolling deploy, a crash loop, a second
    # wrong key): its out-of-schedule try must not use up a retry, nor dead-letter the last one
    now = datetime.now(UTC)
    started, before = now - timedelta(seconds=1), now - timedelta(minutes=5)
    shared = FakeShared(answer=AuthenticationError("revoked", psp="gocardless", http_status=401))
    keys = {"payment:pay-1": 1, "payment:pay-2": len(SCHEDULE)}  # a first retry, the last one
    stage = _stage(shared, started)
    due = now + timedelta(minutes=10)
    for n, (key, attempt) in enumerate(keys.items()):
        shared.parked[key] = {"pending": [_origin(n)], "stages": {_origin(n): parking.RETRY}}
        await stage.offer(_envelope(n, attempt, due, before, key=key))
    await _tick(stage)
    assert shared.calls == 2
    assert shared.parks == []
    assert stage.app.letters == []  # type: ignore[attr-defined]
    held = {p.key: p for p in stage.queue.items()}
    assert sorted(held) == sorted(keys)
    assert {p.attempt for p in held.values()} == set(keys.values())
    assert all(p.due_at == due and p.scheduled is None for p in held.values())
    assert stage.stream.acked == []
    await _tick(stage)  # not again before the schedule says
    assert shared.calls == 2


def _refused_gauge() -> float:
    return metrics.PARKED_FOR_CREDENTIALS.labels("gocardless")._value.get()


async def test_commands_waiting_for_a_key_are_gauged_until_carried_out() -> None:
    # the alert holds on this between a quiet bus's retries (hours apart), when no call is
    # refused for a while; it drops to 0 once the command went through
    now = datetime.now(UTC)
    shared = FakeShared(answer=AuthenticationError("revoked", psp="gocardless", http_status=401))
    shared.parked[KEY] = {"pending": [_origin(1)], "stages": {_origin(1): parking.RETRY}}
    stage = _stage(shared, now - timedelta(seconds=1))
    await stage.offer(_envelope(1, 1, now + timedelta(hours=1), now - timedelta(minutes=5)))
    await _tick(stage)  # tried at once, refused again: held for its schedule
    assert shared.calls == 1 and _refused_gauge() == 1
    await _tick(stage)
    assert _refused_gauge() == 1
    [held] = stage.queue.items()
    held.due_at = now  # its scheduled retry, with the key fixed meanwhile
    shared.answer = None
    shared.parked[KEY] = {"pending": [_origin(1)], "stages": {_origin(1): parking.RETRY}}
    await _tick(stage)
    await _tick(stage)
    assert shared.calls == 2 and stage.queue.items() == [] and _refused_gauge() == 0


async def test_a_worker_with_another_key_tries_at_once_one_with_the_refused_key_does_not() -> None:
    from pydantic import SecretStr

    from streams.secrets_check import key_fingerprint

    now = datetime.now(UTC)
    started = now - timedelta(minutes=1)
    due = now + timedelta(hours=1)
    for own, expected_calls in (("new-key", 1), ("old-key", 0)):
        shared = FakeShared(answer=None)
        shared.parked[KEY] = {"pending": [_origin(1)], "stages": {_origin(1): parking.RETRY}}
        stage = _stage(shared, started)
        stage.app.settings.gocardless = SimpleNamespace(access_token=SecretStr(own))  # type: ignore[attr-defined]
        old = SimpleNamespace(gocardless=SimpleNamespace(access_token=SecretStr("old-key")))
        # parked after this worker started, by a worker still on the old key
        envelope = _envelope(1, 1, due, now - timedelta(seconds=5))
        refused = key_fingerprint(old, "gocardless")  # type: ignore[arg-type]
        assert refused is not None
        envelope.message.headers.append((parking.REFUSED_KEY_HEADER, refused.encode()))
        await stage.offer(envelope)
        await _tick(stage)
        assert shared.calls == expected_calls, own


async def test_a_payment_the_psp_does_not_know_is_dead_lettered_when_the_schedule_ends() -> None:
    # a cancel parked for a 404 (another account's key, streams.unknown_objects) refused at its
    # last scheduled retry: a dead letter with the 404 in its reason, never a failed payment
    now = datetime.now(UTC)
    gone = NotFoundError(
        "Resource not found: payments/PM0001", psp="gocardless", http_status=404,
        code="resource_not_found",
    )  # fmt: skip
    shared = FakeShared(answer=gone)
    shared.parked[KEY] = {"pending": [_origin(1)], "stages": {_origin(1): parking.RETRY}}
    stage = _stage(shared, now - timedelta(minutes=5))
    # parked by this worker (after it started): no early try, only the schedule's last retry
    envelope = _envelope(1, len(SCHEDULE), now - timedelta(seconds=1), now - timedelta(minutes=1))
    await stage.offer(envelope)
    await _tick(stage)
    assert shared.calls == 1 and shared.parks == []
    (letter,) = stage.app.letters  # type: ignore[attr-defined]
    assert letter.reason.startswith("retries exhausted: Resource not found: payments/PM0001")
    assert "http_status=404" in letter.reason
    assert stage.stream.acked == [envelope]
    assert KEY not in shared.parked and stage.queue.items() == []
