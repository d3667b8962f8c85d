"""What ``paybus dev`` prints for a user in another shell (no stack started)."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from streams.dev.guide import Endpoints, explore_lines, export_line, ready_lines
from streams.dev.stack import DevStack
from streams.settings import Settings

ENDS = Endpoints(
    worker="http://127.0.0.1:6066",
    bootstrap="127.0.0.1:40001",
    stripe="http://127.0.0.1:40002",
    localstripe="http://127.0.0.1:40003",
    gocardless="http://127.0.0.1:40004",
    salesforce="https://127.0.0.1:40005",
)


def fake_stack(tmp_path: Path) -> DevStack:
    """A DevStack whose parts are stand-ins with addresses: enough for worker_env()."""
    stack = DevStack(Settings(), tmp_path, web_port=6066)
    stack.broker = SimpleNamespace(bootstrap=ENDS.bootstrap)  # type: ignore[assignment]
    stack.stripe_proxy = SimpleNamespace(base_url=ENDS.stripe)
    stack.localstripe = SimpleNamespace(base_url=ENDS.localstripe)
    stack.gocardless = SimpleNamespace(base_url=ENDS.gocardless)
    stack.salesforce = SimpleNamespace(
        instance_url=ENDS.salesforce, token_for=lambda user: "00Dtoken", cert_path="/ca.pem"
    )
    return stack


def test_the_export_line_is_the_one_paybus_broker_prints() -> None:
    assert export_line("127.0.0.1:9092") == "export PAYBUS_BOOTSTRAP_SERVERS=127.0.0.1:9092"
    assert "  export PAYBUS_BOOTSTRAP_SERVERS=127.0.0.1:40001" in ready_lines(ENDS)


def test_the_secrets_printed_are_the_ones_the_worker_checks(tmp_path: Path) -> None:
    stack = fake_stack(tmp_path)
    assert replace(Endpoints.of(stack), cli_env=()) == ENDS
    env = stack.worker_env()
    text = "\n".join(ready_lines(ENDS))
    for psp, name in (("stripe", "STRIPE"), ("gocardless", "GOCARDLESS")):
        secret = env[f"PAYBUS_{name}__WEBHOOK_SECRET"]
        assert f"  POST {ENDS.worker}/webhooks/{psp}  secret {secret}" in text
    assert f"/events/crm  secret {env['PAYBUS_CRM__INGEST_SECRET']}" in text
    assert "Stripe-Signature" in text and "Webhook-Signature" in text


def test_stripe_is_shown_where_the_worker_talks_to_it(tmp_path: Path) -> None:
    # The worker's Stripe is localstripe behind the idempotency proxy, on another port.
    assert fake_stack(tmp_path).worker_env()["PAYBUS_STRIPE__BASE_URL"] == ENDS.stripe
    lines = explore_lines(ENDS)
    (api,) = [line for line in lines if line.lstrip().startswith("Stripe API")]
    assert ENDS.stripe in api and ENDS.localstripe not in api
    assert any(f"localstripe itself: {ENDS.localstripe}" in line for line in lines)


def test_the_exports_point_every_cli_command_at_the_stand_ins(
    tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `paybus crm check` and `backfill` read Salesforce and the PSPs: without these exports they
    # said "no Salesforce org configured" or went to api.stripe.com
    lines = ready_lines(Endpoints.of(fake_stack(tmp_path)))
    exports = [line.strip().removeprefix("export ") for line in lines if "  export " in line]
    for assignment in exports:
        name, value = assignment.split("=", 1)
        monkeypatch.setenv(name, shlex.split(value)[0])
    settings = Settings()
    assert settings.bootstrap_servers == ENDS.bootstrap
    assert settings.stripe.base_url == ENDS.stripe
    assert settings.gocardless.base_url == ENDS.gocardless
    assert settings.salesforce.instance_url == ENDS.salesforce
    assert settings.salesforce.session_id.get_secret_value() == "00Dtoken"
    assert not any("WEBHOOK_SECRET" in line or "FLUSH" in line for line in exports)


def test_the_exports_name_the_stack_s_topics_as_its_worker_does(
    tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `PAYBUS_PARTITIONS=4 paybus dev`: the other shell's CLI must see 4 too, or `topics
    # create` says every topic has a wrong partition count and `dlq`/`lag` count wrong
    stack = fake_stack(tmp_path)
    stack.settings = Settings(partitions=4, topic_prefix="devx")
    for line in ready_lines(Endpoints.of(stack)):
        if line.startswith("  export "):
            name, value = line.strip().removeprefix("export ").split("=", 1)
            monkeypatch.setenv(name, shlex.split(value)[0])
    settings = Settings()
    assert (settings.partitions, settings.topic_prefix) == (4, "devx")
