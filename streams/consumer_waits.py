"""Deliberate waits: a stage that holds its batch on purpose keeps its worker in the group.

aiokafka takes a consumer out of its group once ``getmany`` has not been called for
``max_poll_interval_ms`` (Faust's ``broker_max_poll_interval``, ``max_poll_interval_s`` here):
the heartbeat task leaves the group (LeaveGroup; on Tansu, whose generations start at 0, it
only forgets its membership and the session expires), and the coordinator will not join
again until the consumer polls (``aiokafka/consumer/group_coordinator.py``,
``_heartbeat_routine`` and ``ensure_active_group``). Faust stops polling by itself when its
streams are full: a partition whose stream buffer is under pressure is left out of the
fetch, with none left it sleeps instead of fetching, and a buffer that is full blocks the
fetch loop outright (``faust/transport/conductor.py``, ``faust/transport/consumer.py``).
So a stage that waits out an outage (the CRM writer while Salesforce does not answer) with
updates still arriving took its worker out of the group after that interval, and the worker
never came back: the revocation stops Faust's flow, Faust does not poll while the flow is
stopped, and aiokafka does not rejoin until it polls (measured on the embedded broker: the
worker consumed nothing after the outage, until restarted).

While a stage waits on purpose it says so with :meth:`DeliberateWaits.waiting_on`: the
consumer counts as polling, as one blocked in ``getmany`` waiting for records does (aiokafka's
own ``fetch_context``), so heartbeats go on, the assignment stays and no other worker takes
the partitions (it could write no sooner). And its partitions are not taken for stalled:
the gap repair (:mod:`streams.consumer`) would otherwise re-read each of them every 30 s,
with a warning, and Faust log an ERROR for each every 1.25 s once five minutes had passed
(``stream_processing_timeout``, ``broker_commit_livelock_soft_timeout``), for the whole
outage.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    _Base = faust_aiokafka.Consumer
else:
    _Base = object


class DeliberateWaits(_Base):
    """The deliberate-wait bookkeeping of a Faust consumer; call :meth:`_init_waits` from
    ``__init__``."""

    def _init_waits(self) -> None:
        self._waits: Counter[str] = Counter()

    def waiting_deliberately(self, tp: Any) -> bool:
        """Whether a stage is waiting on purpose with records of ``tp``'s topic in hand."""
        return self._waits[tp.topic] > 0

    @contextlib.contextmanager
    def waiting_on(self, topic: str) -> Iterator[None]:
        """While inside: the stage reading ``topic`` waits on purpose (see the module doc)."""
        try:
            release = self._hold_poll()
        except Exception as exc:  # best effort: the outage handling must not fail on it
            log.warning("cannot hold the consumer's place in its group: %r", exc)
            release = _nothing
        self._waits[topic] += 1
        try:
            yield
        finally:
            self._waits[topic] -= 1
            if self._waits[topic] <= 0:
                del self._waits[topic]
            try:
                release()
            except Exception as exc:
                log.warning("cannot release the consumer's poll hold: %r", exc)

    def _hold_poll(self) -> Callable[[], None]:
        """Count as polling until the returned function is called: aiokafka's fetch context,
        entered and left on the consumer's own thread (its counter is that thread's)."""
        thread: Any = self._thread
        consumer = getattr(thread, "_consumer", None)
        if consumer is None:  # not started, or gone: no group to stay in
            return lambda: None
        context = consumer._subscription.fetch_context()
        loop = thread.thread_loop

        def on_thread(call: Callable[[], Any]) -> None:
            try:
                loop.call_soon_threadsafe(call)
            except RuntimeError:  # the thread's loop is closed: the consumer is stopping
                log.debug("consumer thread gone; poll hold not changed")

        on_thread(context.__enter__)
        return lambda: on_thread(lambda: context.__exit__(None, None, None))


def _nothing() -> None:
    return None


def waiting_on(app: Any, topic: str) -> contextlib.AbstractContextManager[None]:
    """``app``'s consumer's :meth:`DeliberateWaits.waiting_on`; nothing for an app without
    such a consumer (a stage driven by hand in a unit test)."""
    consumer = getattr(app, "_consumer", None) if app is not None else None
    if isinstance(consumer, DeliberateWaits):
        return consumer.waiting_on(topic)
    return contextlib.nullcontext()
