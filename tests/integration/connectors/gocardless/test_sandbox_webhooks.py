"""Webhook delivery: GoCardless-signed batches, and seeded misbehaviour (shuffle, duplicate,
drop) that is the same on every run, so a flaky-looking bus failure is always reproducible."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gocardless_pro
import pytest
import requests
from gocardless_pro import webhooks
from gocardless_pro.errors import InvalidSignatureError

from connectors.gocardless.sandbox import RunningSandbox, start_sandbox

from .conftest import SECRET, TOKEN, Receiver, make_mandate, make_payment


def busy_world(client: gocardless_pro.Client, sandbox: RunningSandbox) -> list[str]:
    """Three payments taken to paid_out; returns every event id, oldest first."""
    mandate = make_mandate(client)
    for amount in (100, 200, 300):
        make_payment(client, mandate.id, amount=amount)
    sandbox.advance(steps=3)
    return [e.id for e in client.events.all()][::-1]


def test_batches_are_signed_like_gocardless(
    client: gocardless_pro.Client, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    sandbox.configure_webhooks(url=receiver.url, batch_size=4)
    ids = busy_world(client, sandbox)
    report = sandbox.deliver_webhooks()
    assert [b["status"] for b in report["batches"]] == [204] * len(report["batches"])
    received = receiver.wait_for(len(report["batches"]))
    delivered: list[str] = []
    for body, headers in received:
        assert headers["Content-Type"] == "application/json"
        events = webhooks.parse(body, SECRET, headers["Webhook-Signature"])
        assert 1 <= len(events) <= 4
        delivered.extend(e.id for e in events)
        assert json.loads(body)["meta"]["webhook_id"].startswith("WB")
        with pytest.raises(InvalidSignatureError):
            webhooks.parse(body + b" ", SECRET, headers["Webhook-Signature"])
    assert delivered == ids  # no misbehaviour configured: every event once, in order
    first = webhooks.parse(received[0][0], SECRET, received[0][1]["Webhook-Signature"])[0]
    assert (first.resource_type, first.action) == ("mandates", "created")
    assert sandbox.deliver_webhooks()["batches"] == []  # nothing left to send


def test_failed_delivery_is_retried_next_time(
    client: gocardless_pro.Client, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    sandbox.configure_webhooks(url=receiver.url)
    make_mandate(client)
    receiver.status = 500
    report = sandbox.deliver_webhooks()
    assert [b["status"] for b in report["batches"]] == [500]
    assert len(sandbox.admin("GET", "/_sandbox/outbox")["event_ids"]) == 1
    receiver.status = 200
    again = sandbox.deliver_webhooks()
    assert again["batches"][0]["event_ids"] == report["batches"][0]["event_ids"]
    assert sandbox.admin("GET", "/_sandbox/outbox")["event_ids"] == []


def misbehave(seed: int) -> tuple[list[list[int]], list[int], int]:
    """Run one scenario in a fresh sandbox; the delivery pattern as indices into history."""
    options = {"seed": seed, "shuffle": True, "duplicate_rate": 0.3, "drop_rate": 0.2,
               "batch_size": 5}  # fmt: skip
    with start_sandbox(token=TOKEN, webhook_secret=SECRET, webhook_options=options) as sandbox:
        client = gocardless_pro.Client(access_token=TOKEN, base_url=sandbox.base_url)
        ids = busy_world(client, sandbox)
        report = sandbox.deliver_webhooks()
    index = {event_id: i for i, event_id in enumerate(ids)}
    batches: list[list[int]] = []
    for batch in report["batches"]:
        parsed = webhooks.parse(batch["body"], SECRET, batch["signature"])
        assert [e.id for e in parsed] == batch["event_ids"] and len(parsed) <= 5
        batches.append([index[e.id] for e in parsed])
    return batches, sorted(index[e] for e in report["dropped"]), len(ids)


def test_misbehaviour_is_deterministic_under_a_seed() -> None:
    batches, dropped, total = misbehave(seed=7)
    assert misbehave(seed=7) == (batches, dropped, total)
    assert misbehave(seed=8) != (batches, dropped, total)

    sent = [i for batch in batches for i in batch]
    assert dropped and not set(dropped) & set(sent)  # dropped means never sent...
    assert set(sent) | set(dropped) == set(range(total))  # ...but still in the events list
    assert len(sent) > len(set(sent))  # some events twice
    assert sent != sorted(sent)  # and out of order


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            if requests.get(url + "/_sandbox/health", timeout=1).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.05)  # polling a condition: the process is still binding
    raise AssertionError("sandbox CLI did not come up")


def test_cli_serves_on_loopback_and_persists(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "demo.db"
    cmd = [sys.executable, "-m", "connectors.gocardless.sandbox", "--port", str(port),
           "--db", str(db), "--token", TOKEN]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_up(base, proc)
        client = gocardless_pro.Client(access_token=TOKEN, base_url=base)
        customer = client.customers.create({"company_name": "Demo Ltd"})
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    with start_sandbox(db_path=str(db), token=TOKEN) as sandbox:
        again = gocardless_pro.Client(access_token=TOKEN, base_url=sandbox.base_url)
        assert again.customers.get(customer.id).company_name == "Demo Ltd"


def test_demo_mode_advances_and_delivers_by_itself(receiver: Receiver) -> None:
    with start_sandbox(
        token=TOKEN,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        auto_advance_seconds=0.05,
        auto_deliver_seconds=0.05,
    ) as sandbox:
        client = gocardless_pro.Client(access_token=TOKEN, base_url=sandbox.base_url)
        payment = make_payment(client, make_mandate(client).id)
        deadline = time.monotonic() + 10
        while client.payments.get(payment.id).status != "paid_out":
            assert time.monotonic() < deadline, "auto-advance did not reach paid_out"
            time.sleep(0.02)  # polling a condition the background task will make true
        body, headers = receiver.wait_for(1)[0]
        assert webhooks.parse(body, SECRET, headers["Webhook-Signature"])
