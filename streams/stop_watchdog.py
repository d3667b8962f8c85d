"""A worker's stop, bounded: once a stop signal arrives, the process exits within a set time.

A Faust worker stops its services one by one, and several of them wait on Kafka without a
bound of their own (aiokafka's producer ``stop`` flushes until its request timeout, 20 minutes
under Faust; a commit flushes first). With the broker unreachable such a worker outlives any
grace period, so an orchestrator has to SIGKILL it, and an operator at a terminal sees Ctrl-C
do nothing. The watchdog turns that into a logged exit after ``stop_timeout_s``.

Exiting mid-stop loses nothing: a stage acknowledges an input only after its outputs are
acknowledged and commits only acknowledged offsets, so whatever the stop did not finish is
processed again after the restart (the same guarantee that a ``kill -9`` relies on, which the
failover tests exercise).
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

#: Exit status of a worker the watchdog ended (EX_SOFTWARE: it did not stop as it should).
EXIT_STOP_TIMEOUT = 70


def arm(limit_s: float) -> threading.Timer:
    """Start the countdown: exit the process with :data:`EXIT_STOP_TIMEOUT` after ``limit_s``
    unless it has ended first (the timer thread is a daemon, so a finished stop is not held)."""

    def give_up() -> None:
        log.error(
            "worker did not stop within %g s of the stop signal; exiting now (what it had "
            "not committed is processed again after a restart)",
            limit_s,
        )
        logging.shutdown()
        os._exit(EXIT_STOP_TIMEOUT)

    timer = threading.Timer(limit_s, give_up)
    timer.daemon = True
    timer.start()
    return timer
