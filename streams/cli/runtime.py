"""``paybus worker`` and ``paybus dev``: run the bus."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer

from streams.cli.common import fail, settings_of


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("dev")(dev)
    app.command("bench")(bench)


def worker(
    ctx: typer.Context,
    role: Annotated[
        list[str] | None, typer.Option("--role", "-r", help="Stage(s) to run (default: all).")
    ] = None,
) -> None:
    """Run a paybus worker (Faust) with the configured stages."""
    import faust

    from streams import log_throttle
    from streams.admin import PARTITIONS_HELP, create_topics, partition_mismatches
    from streams.agents import ROLES, attach, check_roles
    from streams.app import build_app
    from streams.cli.gateways_cmd import config_errors, config_warnings
    from streams.log_format import FORMAT, SingleLineFormatter
    from streams.secrets_check import insecure_secrets, placeholder_psp_keys
    from streams.topics import TopicMap

    settings = settings_of(ctx)
    try:  # every check that needs no broker comes before create_topics touches one
        roles = check_roles(role or ROLES)
    except ValueError as exc:
        fail(str(exc))
    if errors := config_errors(settings):
        fail("invalid gateway configuration (see `paybus gateways check`):\n" + "\n".join(errors))
    if insecure := insecure_secrets(settings, roles):
        fail("production worker with public or missing secrets:\n" + "\n".join(insecure), 2)
    specs = TopicMap.from_settings(settings).all()
    try:
        create_topics(settings.bootstrap_servers, specs)
        mismatched = partition_mismatches(settings.bootstrap_servers, specs)
    except Exception as exc:
        fail(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}")
    if mismatched:
        fail(PARTITIONS_HELP + ":\n" + "\n".join(mismatched))
    # Faust is told not to touch logging; without a handler of our own, an agent that crashes
    # would leave no trace anywhere. Warnings and errors go to stderr with the time and logger.
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr, format=FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(SingleLineFormatter(FORMAT))  # a quoted value cannot forge a line
        log_throttle.install(handler)  # an unreachable broker: one line per kind per 10 s
    for warning in [*placeholder_psp_keys(settings, roles), *config_warnings(settings)]:
        logging.getLogger("streams.worker").warning(warning)
    app = build_app(settings)
    attach(app, roles)
    worker_class(faust.Worker)(
        app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    ).execute_from_commandline()


def worker_class(base: type[Any]) -> type[Any]:
    """Faust's worker, settling the garbage collector once start-up (and recovery) is done and
    stopping within ``stop_timeout_s`` of a stop signal.

    Its start-up spinner is dropped when stdout is not a terminal: Faust ends the spinner with
    a cursor escape (``ESC[?25h``) whatever the stream, so every worker log file (the dev
    stack's, a container's) began with one.
    """
    from streams import gc_policy, stop_watchdog
    from streams.terminal import is_terminal

    class PaybusWorker(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if not is_terminal(self.stdout):
                self.spinner = None

        async def on_startup_finished(self) -> None:
            await super().on_startup_finished()
            gc_policy.settle()

        def _schedule_shutdown(self, signal: Any) -> None:
            """The first stop signal also arms the watchdog (:mod:`streams.stop_watchdog`)."""
            settings = getattr(self.app, "settings", None)
            if not self._signal_stop_time and settings is not None:
                stop_watchdog.arm(settings.stop_timeout_s)
            super()._schedule_shutdown(signal)

    return PaybusWorker


def dev(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option(help="Run the story to the end and exit: 0 only if CRM matches PSPs.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Give up on the story after this long (s).")] = 240,
    keep_logs: Annotated[
        bool,
        typer.Option(
            help="Keep the run's folder (worker and broker logs, sandbox databases) in the temp "
            "directory after a clean exit; a failed run always keeps it and prints its path."
        ),
    ] = False,
) -> None:
    """The embedded default: broker, PSP and CRM stand-ins, worker, demo story, live table."""
    from streams.dev.demo import run_demo

    raise typer.Exit(run_demo(settings_of(ctx), once=once, timeout_s=timeout, keep_logs=keep_logs))


def bench(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Events per throughput measurement.")] = 40_000,
    quick: Annotated[bool, typer.Option(help="Small counts: the whole run in ~2 minutes.")] = False,
    out_dir: Annotated[str, typer.Option(help="Where the JSON results go.")] = "bench/results",
) -> None:
    """Benchmarks on fresh embedded brokers: figures as ratios to same-run baselines."""
    from pathlib import Path

    from streams.bench.runner import main as run_bench

    raise typer.Exit(run_bench(settings_of(ctx), events=events, quick=quick, out_dir=Path(out_dir)))
