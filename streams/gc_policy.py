"""Garbage-collector settings for long-running workers.

A worker's heap after start-up is mostly objects that live as long as the process (modules,
Faust's services and agents, the aiokafka clients, a recovered table's dict). CPython's full
collections walk every tracked object each time, so each one cost the sequencer ~80 ms
(measured with ``gc.callbacks`` on the bench workload: 11 full collections, 0.9 s of 24 s CPU
per 100k events), a pause that lands on whatever batch is in flight. Once start-up is done,
:func:`settle` moves everything then alive into the permanent generation (``gc.freeze``,
as CPython's docs suggest for long-lived servers) and makes the youngest generation larger,
so the per-event garbage (futures, records, exceptions) is swept in fewer, bigger passes.
Cyclic garbage is still collected; only the frozen start-up objects are no longer re-walked.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

#: Allocations (minus deallocations) between young-generation collections (CPython: 700).
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Freeze the start-up heap and widen the young generation (see the module doc)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    frozen = gc.get_freeze_count()
    log.info("gc: %d start-up objects frozen; young threshold %d", frozen, YOUNG_THRESHOLD)
