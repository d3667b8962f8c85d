"""``paybus bench`` end to end on a tiny input: every measurement runs and the JSON is sound.

Figures from so small an input mean nothing; this only proves the harness works (brokers,
worker subprocesses, progress, table, JSON) so ``make bench`` does not rot between releases.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.bench.context import Sizes
from streams.bench.runner import main
from streams.settings import Settings

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(480)]

MEASURED = {
    "raw_produce", "raw_consume", "faust_ceiling", "plain_loop", "sequencer_vs_faust",
    "sequencer_cpu", "latency_p50_1k", "latency_p99_1k", "memory_rss", "scale_1",
    "router_vs_faust", "router_vs_plain", "router_cpu", "crm_writer_vs_faust",
    "crm_writer_vs_plain", "crm_writer_cpu", "crm_api_calls", "crm_api_calls_rule",
    "webhook_crm_p50_1k", "webhook_crm_p99_1k", "webhook_crm_p99_100", "webhook_crm_sustained_rate",
    "broker_cpu_fresh", "broker_cpu_history", "kafka_hop_p50", "kafka_hop_p99", "path_floor_p99",
}  # fmt: skip


def test_bench_runs_end_to_end_on_a_tiny_input(clean_env: Path) -> None:
    out_dir = clean_env / "results"
    settings = Settings(data_dir=clean_env / "data")

    code = main(settings, events=400, quick=True, out_dir=out_dir, sizes=Sizes.tiny())

    [path] = list(out_dir.glob("*.json"))
    body = json.loads(path.read_text())
    rows = {row["key"]: row for row in body["rows"]}
    errors = {k: r["note"] for k, r in rows.items() if r["verdict"] == "error"}
    assert code == 0 and not errors, errors
    assert rows.keys() >= MEASURED
    for key in MEASURED:
        assert rows[key]["value"] > 0, key
    assert not [k for k, r in rows.items() if r["verdict"] == "not yet"]
    for hop in ("web", "normaliser", "sequencer", "crm", "before_writer"):  # may round below 0
        assert rows[f"webhook_crm_hop_{hop}_1k"]["extra"]["count"] > 0, hop
    for hop in ("normaliser", "sequencer", "crm"):  # the stages' own pickup-age histograms
        waited = rows[f"webhook_crm_hop_{hop}_1k"]["extra"]
        assert 0 < waited["pickup_p50_ms"] <= waited["pickup_p99_ms"], hop
    assert rows["sequencer_vs_faust"]["ratio"] > 0
    assert "cores busy" in rows["scale_1"]["note"]  # what one worker leaves of the cores
    assert rows["broker_cpu_history"]["ratio"] > 0
    window = rows["webhook_crm_p99_1k_window"]  # the same rate, the CRM flushing sooner
    assert window["value"] > 0 and window["target"] is None
    assert window["extra"]["flush_interval_s"] == 0.05
    assert rows["webhook_crm_p99_1k"]["extra"]["flush_interval_s"] is None
    assert "allow a write every 167 ms at most" in rows["webhook_crm_p99_1k"]["note"]
    tried = rows["webhook_crm_sustained_rate"]["extra"]["tried"]  # bounds and bisection tries
    assert tried and tried[0]["sustained"] and rows["webhook_crm_sustained_rate"]["note"]
    p99s = rows["webhook_crm_p99_1k"]["extra"]["p99s_ms"]  # the reported run is the median
    assert len(p99s) == 2 and rows["webhook_crm_p99_1k"]["value"] == max(p99s)
    for row in body["rows"]:
        assert {"measure", "value", "unit", "baseline", "ratio", "target", "verdict"} <= row.keys()
    assert body["meta"]["events"] == 400 and body["meta"]["environment"]["cpus"]
