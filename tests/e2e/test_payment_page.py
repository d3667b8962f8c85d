"""A payment page end to end on the embedded broker and localstripe.

A ``request_payment`` CRM change -> router -> Stripe connector worker -> a PaymentIntent that
waits for its customer -> ``pending_customer_approval`` with the signed page link (for the CRM
record) -> the page served by the web role -> the customer pays (Stripe.js would confirm the
intent from the browser; here the same confirm call is made with the client library) ->
localstripe's webhook -> ``confirmed``, and the page now says thank you.

Once a link has expired (and a grace period passed) with its payment still waiting, the janitor
cancels it through the bus: a ``cancel`` intent -> router -> the connector cancels the
PaymentIntent -> ``cancelled`` with the reason, in the Salesforce sandbox's record; a page
paid in time is left alone.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors.salesforce.sandbox import start_sandbox
from streams.broker import EmbeddedBroker
from streams.page_links import PAGE_URL_ATTRIBUTE, link_expiry, page_link
from streams.publisher import Publisher
from tests.e2e.test_card_payment import API_KEY, TopicReader, stripe_rig
from tests.integration.streams.test_crm_salesforce import sandbox_env, worker_metric
from tests.support.workers import WorkerProcess, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]
PAGE_SECRET = "page_secret_e2e"


def _get(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_customer_pays_on_the_page_and_the_record_is_confirmed(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path, localstripe: Any, proxy: Any
) -> None:
    tm, env, client = stripe_rig(
        broker, topic_prefix, tmp_path, localstripe, proxy,
        PAYBUS_STRIPE__PUBLISHABLE_KEY="pk_test_page_e2e", PAYBUS_PAGES__SECRET=PAGE_SECRET,
    )  # fmt: skip
    port = int(env["PAYBUS_WEB_PORT"])
    worker = WorkerProcess.paybus(env, tmp_path / "worker.log").start()
    reader = TopicReader(broker.bootstrap, {tm.status_updates.name: "StatusUpdate"})
    aggregate = f"pay-{uuid.uuid4().hex[:10]}"

    def updates() -> list[dict[str, Any]]:
        reader.poll()
        return [u for u in reader.records[tm.status_updates.name] if u["aggregate_id"] == aggregate]

    try:
        worker.wait_ready()
        with Publisher(broker.bootstrap, topic_prefix=topic_prefix) as pub:
            pub.publish_crm_change({
                "change_id": f"chg-{aggregate}", "aggregate_id": aggregate,
                "aggregate_type": "payment", "intent": "request_payment",
                "occurred_at": datetime.now(UTC), "source": "test-crm", "amount_minor": 2500,
                "currency": "EUR", "description": "Membership 2027",
                "crm_record_id": "a01000000000001AAA",
            })  # fmt: skip
        wait_for(lambda: bool(updates()), 60, f"the page's status; log: {worker.log_tail()}")
        (waiting,) = updates()
        assert waiting["to_status"] == "pending_customer_approval", waiting
        link = waiting["attributes"][PAGE_URL_ATTRIBUTE]
        pi_id = waiting["psp_object_id"]
        assert link.startswith(f"http://127.0.0.1:{port}/pay/stripe/{pi_id}?exp=")

        status, page, headers = _get(link)
        assert status == 200, page
        assert "25.00 EUR" in page  # (localstripe keeps no description to show)
        assert '"pk_test_page_e2e"' in page and f"{proxy.base_url}/js.stripe.com/v3/" in page
        assert API_KEY not in page, "the secret API key must never reach a browser"
        assert headers["Cache-Control"] == "no-store" and "script-src" in headers[
            "Content-Security-Policy"]  # fmt: skip

        # a link cannot be bent: another signature, a later expiry, another payment
        query = parse_qs(urlsplit(link).query)
        base = f"http://127.0.0.1:{port}"
        assert _get(link[:-4] + "beef")[0] == 403
        assert _get(link.replace(f"exp={query['exp'][0]}", "exp=9999999999"))[0] == 403
        expired = page_link(base, PAGE_SECRET, "stripe", pi_id, int(time.time()) - 1)
        assert _get(expired)[0] == 410
        other = client.v1.payment_intents.create(
            params={"amount": 100, "currency": "eur", "payment_method_types": ["card"]}
        )
        forged_other = page_link(base, PAGE_SECRET, "stripe", other.id, int(time.time()) + 60)
        assert _get(forged_other)[0] == 404, "only a request_payment's intent has a page"

        # The customer pays: Stripe.js confirms the intent with their card from the page.
        # localstripe's stand-in script cannot take a card, so the same two steps are made
        # with the client library (attach a card, confirm), and its webhook comes back.
        client.v1.payment_intents.update(pi_id, params={"payment_method": "pm_card_visa"})
        client.v1.payment_intents.confirm(pi_id)
        wait_for(lambda: updates()[-1]["to_status"] == "confirmed", 60,
                 f"confirmed through the webhook; log: {worker.log_tail()}")  # fmt: skip
        status, page, _ = _get(link)
        assert status == 200 and "Thank you" in page and "25.00 EUR" in page
        assert proxy.created["payment_intents"] == 2  # the page's and the test's other one
    finally:
        reader.close()
        worker.stop()


#: Short enough for a test of seconds, long enough for the paid page's customer to pay (and
#: their webhook to come back) before its link expires on a busy machine.
TTL_S, GRACE_S, CHECK_S = 8, 1.0, 0.5


def _request(aggregate: str, record_id: str) -> dict[str, Any]:
    return {
        "change_id": f"chg-{aggregate}", "aggregate_id": aggregate,
        "aggregate_type": "payment", "intent": "request_payment",
        "occurred_at": datetime.now(UTC), "source": "test-crm", "amount_minor": 1800,
        "currency": "EUR", "crm_record_id": record_id,
    }  # fmt: skip


def test_an_expired_page_is_cancelled_and_one_paid_in_time_is_not(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path, localstripe: Any, proxy: Any
) -> None:
    with start_sandbox() as sandbox:
        tm, env, client = stripe_rig(
            broker, topic_prefix, tmp_path, localstripe, proxy, **sandbox_env(sandbox),
            PAYBUS_PAGES__SECRET=PAGE_SECRET, PAYBUS_PAGES__LINK_TTL_S=str(TTL_S),
            PAYBUS_OPS__PAGE_EXPIRY_CHECK_S=str(CHECK_S),
            PAYBUS_OPS__PAGE_EXPIRY_GRACE_S=str(GRACE_S),
        )  # fmt: skip
        paid, expiring = (f"pay-{uuid.uuid4().hex[:10]}" for _ in range(2))
        seeded = [{"External_Id__c": paid}, {"External_Id__c": expiring}]
        ids = sandbox.admin.seed("Payment__c", seeded, as_user="integration")
        record = dict(zip((paid, expiring), ids, strict=True))
        worker = WorkerProcess.paybus(env, tmp_path / "worker.log").start()
        reader = TopicReader(
            broker.bootstrap,
            {tm.status_updates.name: "StatusUpdate", tm.crm_changes.name: "CrmChange"},
        )

        def updates(aggregate: str) -> list[dict[str, Any]]:
            reader.poll()
            found = reader.records[tm.status_updates.name]
            return [u for u in found if u["aggregate_id"] == aggregate]

        def crm(aggregate: str) -> dict[str, Any]:
            return sandbox.admin.record("Payment__c", record[aggregate])

        try:
            worker.wait_ready()
            with Publisher(broker.bootstrap, topic_prefix=topic_prefix) as pub:
                pub.publish_crm_changes([_request(paid, record[paid]),
                                         _request(expiring, record[expiring])])  # fmt: skip
            log = worker.log_tail
            wait_for(lambda: bool(updates(paid)) and bool(updates(expiring)), 60,
                     f"both pages waiting; log: {log()}")  # fmt: skip
            waiting = {a: updates(a)[0] for a in (paid, expiring)}
            assert {u["to_status"] for u in waiting.values()} == {"pending_customer_approval"}
            links = {a: u["attributes"][PAGE_URL_ATTRIBUTE] for a, u in waiting.items()}
            pi = {a: u["psp_object_id"] for a, u in waiting.items()}

            # One customer pays in time (as on the page: attach a card, confirm).
            client.v1.payment_intents.update(pi[paid], params={"payment_method": "pm_card_visa"})
            client.v1.payment_intents.confirm(pi[paid])
            wait_for(lambda: updates(paid)[-1]["to_status"] == "confirmed", 30,
                     f"the paid page confirmed; log: {log()}")  # fmt: skip
            expires = link_expiry(links[expiring])
            assert expires is not None and time.time() < expires, "paid after the expiry"

            # The other never does: after its link expires (and the grace), it is cancelled.
            wait_for(lambda: updates(expiring)[-1]["to_status"] == "cancelled",
                     TTL_S + 30, f"the expired page cancelled; log: {log()}")  # fmt: skip
            cancelled = updates(expiring)[-1]
            assert time.time() >= expires + GRACE_S
            assert cancelled["reason"].startswith("payment page link expired at ")
            assert client.v1.payment_intents.retrieve(pi[expiring]).status == "canceled"
            wait_for(lambda: crm(expiring)["Status__c"] == "cancelled", 30,
                     f"the CRM record cancelled; log: {log()}")  # fmt: skip
            assert crm(expiring)["Failure_Reason__c"] == cancelled["reason"]
            assert crm(expiring)["Payment_Page_URL__c"] == links[expiring]
            assert _get(links[expiring])[0] == 410

            # The paid page: past its own expiry and grace too, and nothing cancelled it.
            paid_expires = link_expiry(links[paid])
            assert paid_expires is not None
            time.sleep(max(0.0, paid_expires + GRACE_S + 2 * CHECK_S - time.time()))
            assert [u["to_status"] for u in updates(paid)] == [
                "pending_customer_approval", "confirmed"]  # fmt: skip
            assert client.v1.payment_intents.retrieve(pi[paid]).status == "succeeded"
            wait_for(lambda: crm(paid)["Status__c"] == "confirmed", 30, "the paid record")
            assert not crm(paid)["Failure_Reason__c"]
            intents = [
                c for c in reader.records[tm.crm_changes.name] if c["source"] == "page-expiry"
            ]
            assert [(c["aggregate_id"], c["intent"]) for c in intents] == [(expiring, "cancel")]
            for outcome in ("requested", "cancelled"):
                assert worker_metric(worker, "paybus_page_expiry_total", outcome=outcome) == 1
            assert worker_metric(worker, "paybus_page_expiry_total", outcome="failed") == 0
            routed = worker_metric(worker, "paybus_events_total", stage="router",
                                   outcome="applied", source="page-expiry")  # fmt: skip
            assert routed == 1
        finally:
            reader.close()
            worker.stop()
