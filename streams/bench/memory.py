"""Memory per tracked aggregate of the sequencer's state, measured in a clean subprocess.

The sequencing agent keeps one ``encode_state(state)`` bytes value per aggregate in a Faust
memory table, whose store is a dict of key -> value plus a dict of key -> partition (the agent
fills both). This builds N such entries exactly as the agent would (each aggregate's history
judged by the engine, the state encoded, the key a fresh string) and measures how much the
process grew. Histories are built in chunks and dropped, so what stays is the table alone.
Run in a fresh interpreter so the bench's own heap is not in the figure:

* ``rss``: growth of the resident set (``/proc/self/statm``) — what the target is about;
* ``heap``: Python allocations still live (``tracemalloc``), a cross-check without allocator
  slack;
* ``value``: the mean size of the encoded values alone (what the changelog carries per write);
* ``dict``: the resident cost of the previous form (``to_dict()`` values), for comparison.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tracemalloc
from typing import Any

from streams.bench.context import BenchContext
from streams.bench.report import Row, Target

SECTION = "scale"
TARGET = Target("value", "<=", 500.0, "<= 500 B")
_CHUNK = 5_000


def build_table(count: int, *, form: str = "bytes") -> tuple[dict[str, Any], dict[str, int]]:
    """``count`` aggregates' states in the shape of a Faust memory table's store.

    ``form`` is ``bytes`` (what the agent stores) or ``dict`` (the earlier ``to_dict()`` form).
    """
    from streams.demo_data import histories
    from streams.sequencing import Sequencer
    from streams.state_codec import encode_state

    engine = Sequencer(max_seen=64, max_held=32)
    data: dict[str, Any] = {}
    key_partition: dict[str, int] = {}
    for start in range(0, count, _CHUNK):
        hist = histories(min(_CHUNK, count - start), seed=start, prefix=f"m{start}")
        for agg, events in hist.items():
            state = None
            for ev in events:
                state = engine.judge(state, _event(ev)).state
            assert state is not None
            key = "".join(agg)  # a fresh string, as decoded from a record key
            if form == "dict":
                data[key] = json.loads(json.dumps(state.to_dict()))
            else:
                data[key] = encode_state(state)
            key_partition[key] = hash(key) % 8
        del hist
    return data, key_partition


def _event(ev: Any) -> Any:
    from streams.sequencing_state import Event

    return Event(
        ev.event_id,
        ev.aggregate_id,
        ev.aggregate_type,
        ev.status,
        ev.occurred_at,
        ev.source,
        ev.method,
    )


def _rss() -> int:
    from streams.bench.procs import rss_bytes

    return rss_bytes()


def measure_in_process(count: int, mode: str) -> dict[str, float]:
    """Bytes per aggregate for one ``mode`` (see the module doc)."""
    if mode == "value":
        values = build_table(count)[0].values()
        return {"bytes_per_aggregate": sum(map(len, values)) / count, "aggregates": count}
    # Warm the imports and the engine's caches so they are not counted as table growth.
    build_table(50, form="dict")
    build_table(50)
    gc.collect()
    if mode == "heap":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = _rss()
    table = build_table(count, form="dict" if mode == "dict" else "bytes")
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if mode == "heap" else _rss()
    assert len(table[0]) == count
    return {"bytes_per_aggregate": (after - before) / count, "aggregates": count}


def measure_memory(ctx: BenchContext) -> list[Row]:
    """Run each mode in its own interpreter and report bytes per aggregate and per 1M."""
    n = ctx.sizes.memory_aggregates
    modes = ("rss", "heap", "value", "dict")
    results: dict[str, float] = {}
    for i, mode in enumerate(modes):
        ctx.progress(i, len(modes), f"memory: {n:,} aggregates ({mode})")
        # tracemalloc makes allocation several times slower: a quarter of the aggregates
        # gives the same per-aggregate figure.
        count = max(n // 4, 1000) if mode == "heap" else n
        out = subprocess.run(
            [sys.executable, "-m", "streams.bench.memory", str(count), mode],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        results[mode] = float(json.loads(out.stdout)["bytes_per_aggregate"])
    per_m = results["rss"] * 1_000_000 / 2**20
    return [
        Row(
            "memory_rss",
            SECTION,
            "resident per aggregate",
            results["rss"],
            "bytes",
            target=TARGET,
            note=f"{n:,} aggregates as the sequencer table holds them: ~{per_m:,.0f} MiB per 1M",
            extra={"mib_per_million": per_m},
        ),
        Row("memory_heap", SECTION, "Python heap per aggregate", results["heap"], "bytes"),
        Row(
            "memory_value",
            SECTION,
            "encoded state per aggregate",
            results["value"],
            "bytes",
            note="mean size of one table value (what each changelog write carries)",
        ),
        Row(
            "memory_dict",
            SECTION,
            "resident, earlier dict form",
            results["dict"],
            "bytes",
            baseline="compact form",
            baseline_value=results["rss"],
            note="the same states held as to_dict() values (before the compact form)",
        ),
    ]


if __name__ == "__main__":
    print(json.dumps(measure_in_process(int(sys.argv[1]), sys.argv[2])))
