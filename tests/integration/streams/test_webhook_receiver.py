"""The webhook receiver on a real worker: 2xx only once the body is in Kafka, 4xx publish nothing.

Forged, stale, truncated and oversized Stripe webhooks and unknown PSPs are refused with the
right status and never reach ``paybus.psp.webhooks``; with the broker gone, the receiver answers
503 so the PSP retries later.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.topics import TopicMap
from tests.support import stripe_events as se
from tests.support.workers import WorkerProcess, paybus_env

pytestmark = pytest.mark.broker
SECRET = "whsec_receiver_test"


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _post_chunked(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    """POST ``body`` chunked, in two pieces with a pause between (as a slow network would)."""

    def pieces() -> Iterator[bytes]:
        yield body[: len(body) // 2]
        time.sleep(0.3)
        yield body[len(body) // 2 :]

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=pieces(), headers=headers, encode_chunked=True)
        return conn.getresponse().status
    finally:
        conn.close()


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _published(bootstrap: str, topic: str) -> list[bytes]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=2000
    )
    try:
        return [m.value for m in consumer]
    finally:
        consumer.close()


def _webhook(pi: str, *, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    obj = se.payment_intent(pi, status="succeeded", aggregate_id=f"pay-{pi}")
    body, headers = se.signed(
        se.event("payment_intent.succeeded", obj), SECRET, timestamp=timestamp
    )
    return body, {**headers, "Content-Type": "application/json"}


def test_receiver_status_codes_and_what_gets_published(tmp_path: Path) -> None:
    # A broker of its own: the last step stops it.
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    tm = TopicMap("rcv", 8, 1)
    create_topics(broker.bootstrap, tm.all())
    env = paybus_env(
        broker.bootstrap, "rcv", tmp_path,
        PAYBUS_STRIPE__WEBHOOK_SECRET=SECRET, PAYBUS_WEBHOOK_MAX_BODY_BYTES="4096",
        PAYBUS_WEBHOOK_PUBLISH_TIMEOUT_S="2", PAYBUS_STOP_FLUSH_TIMEOUT_S="2",
    )  # fmt: skip
    worker = WorkerProcess.paybus(env, tmp_path / "w.log", "--role", "web").start()
    url = f"http://127.0.0.1:{worker.web_port}/webhooks"
    try:
        worker.wait_ready()
        good, headers = _webhook("pi_good")
        assert _post(f"{url}/stripe", good, headers) == 200
        forged = dict(headers, **{"Stripe-Signature": headers["Stripe-Signature"][:-4] + "beef"})
        assert _post(f"{url}/stripe", good, forged) == 400
        stale, stale_headers = _webhook("pi_stale", timestamp=int(time.time()) - 3600)
        assert _post(f"{url}/stripe", stale, stale_headers) == 400
        assert _post(f"{url}/stripe", good[: len(good) // 2], headers) == 400
        assert _post(f"{url}/stripe", good, {"Content-Type": "application/json"}) == 400
        big = json.dumps({"padding": "x" * 8000}).encode()
        assert _post(f"{url}/stripe", big, headers) == 413
        assert _post(f"{url}/adyen", good, headers) == 404
        # paybus's own link records are told apart by this label, which no PSP signs
        relabelled = dict(headers, **{"Content-Type": "application/vnd.paybus.link+json; v=1"})
        assert _post(f"{url}/stripe", good, relabelled) == 415
        # the port PSPs reach serves none of Faust's introspection pages (table contents,
        # the cluster's worker URLs)
        for page in ("/table/", "/router/", "/graph/", "/stats/"):
            assert _get(f"http://127.0.0.1:{worker.web_port}{page}") == 404, page

        values = _published(broker.bootstrap, tm.psp_webhooks.name)
        assert len(values) == 1, "only the correctly signed webhook may be published"
        assert b"pi_good" in values[0]
        metrics = worker.metrics_text() or ""
        assert 'paybus_webhooks_total{outcome="bad_signature",psp="stripe"} 4.0' in metrics
        assert 'paybus_webhooks_total{outcome="bad_content_type",psp="stripe"} 1.0' in metrics

        # A body arriving in pieces is read whole: it was cut at the first piece, so a validly
        # signed webhook failed verification (400, and the PSP eventually gave up on it).
        pieces, pieces_headers = _webhook("pi_pieces")
        assert _post_chunked(worker.web_port, "/webhooks/stripe", pieces, pieces_headers) == 200
        # A byte outside ASCII in the signature is a bad signature (400), not a crash (500).
        odd = dict(headers, **{"Stripe-Signature": f"t={int(time.time())},v1=\xe9"})
        assert _post(f"{url}/stripe", good, odd) == 400
        values = _published(broker.bootstrap, tm.psp_webhooks.name)
        assert len(values) == 2 and any(b"pi_pieces" in v for v in values)

        broker.stop()
        late, late_headers = _webhook("pi_late")
        assert _post(f"{url}/stripe", late, late_headers) == 503

        # With its broker gone (and the late webhook still unsent) the worker stops on SIGTERM
        # as Kubernetes stops a pod, by itself and not by the stop watchdog (25 s, exit 70).
        # It used to hang until SIGKILL: in the consumer thread's stop, and in the producer's.
        assert worker.proc is not None
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            assert worker.proc.wait(20) == 0
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker ignored SIGTERM with its broker gone") from None
    finally:
        worker.kill()
        broker.stop()
