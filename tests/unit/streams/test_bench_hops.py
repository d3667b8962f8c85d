"""The webhook -> CRM hop split of ``make bench`` (pure: stamps in, hops out)."""

from __future__ import annotations

import re

from streams.bench.hops import HOPS, hop_row, hops
from streams.bench.report import percentile


def test_each_hop_is_the_gap_between_its_two_stamps_per_webhook() -> None:
    posted = {"a": 10.0, "b": 20.0}
    raw = {"a": 10.001, "b": 20.003}
    events = {"a": 10.051, "b": 20.103}
    status = {"a": 10.071, "b": 20.133}
    saved = {"a": 10.271}  # b never reached the CRM: only a is timed on the last hop

    found = {h.name: h for h in hops(posted, [raw, events, status], saved)}

    assert list(found) == list(HOPS)
    assert round(found["web"].p50_ms, 3) == 2.0 and round(found["web"].p99_ms, 3) == 3.0
    assert round(found["normaliser"].p99_ms, 3) == 100.0
    assert round(found["sequencer"].p50_ms, 3) == 25.0
    assert found["crm"].count == 1 and round(found["crm"].p50_ms, 3) == 200.0


def test_a_hop_no_webhook_crossed_is_left_out_and_rows_name_each_hop() -> None:
    found = hops({"a": 1.0}, [{"a": 1.1}, {}, {}], {"a": 2.0})
    assert [h.name for h in found] == ["web"]
    row = hop_row("latency", "1k", "1,000/s", found[0])
    assert row.key == "webhook_crm_hop_web_1k"
    assert re.search(r"p99 100 ms over 1 webhooks", row.note)


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.99) == 100.0 and percentile(values, 0.5) == 51.0


def test_busy_cores_is_the_busy_share_of_all_ticks_times_the_cores() -> None:
    import os

    from streams.bench import procs

    cores = os.cpu_count() or 1
    assert procs.busy_cores((100, 1000), (400, 1400)) == 0.75 * cores
    assert procs.busy_cores((100, 1000), (100, 1000)) is None  # no time passed
    assert procs.busy_cores(None, (1, 2)) is None  # no /proc/stat
    now = procs.machine_ticks()
    assert now is not None and 0 <= now[0] <= now[1]


def test_before_writer_spans_post_to_status_update() -> None:
    from streams.bench.hops import before_writer

    posted = {"a": 10.0, "b": 20.0}
    stamps = [{"a": 10.001}, {"a": 10.05}, {"a": 10.08, "b": 20.02}]
    span = before_writer(posted, stamps)
    assert span is not None and span.count == 2
    assert round(span.p50_ms, 3) == 50.0 and round(span.p99_ms, 3) == 80.0
    assert before_writer(posted, []) is None  # an untimed run read no topics
    row = hop_row("latency", "1k", "1,000/s", span, "webhook -> status update")
    assert row.key == "webhook_crm_hop_before_writer_1k"
    assert row.measure.startswith("  webhook -> status update (p50)")
