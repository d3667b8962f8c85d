"""``paybus worker`` and ``paybus dev``: run the bus."""

from __future__ import annotations

from typing import Annotated

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

    from streams.admin import create_topics
    from streams.agents import ROLES, attach
    from streams.app import build_app
    from streams.topics import TopicMap

    settings = settings_of(ctx)
    try:
        create_topics(settings.bootstrap_servers, TopicMap.from_settings(settings).all())
    except Exception as exc:
        fail(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}")
    app = build_app(settings)
    try:
        attach(app, role or ROLES)
    except ValueError as exc:
        fail(str(exc))
    faust.Worker(
        app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    ).execute_from_commandline()


def dev(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(help="Run the demo to completion and exit.")] = False,
    payments: Annotated[int, typer.Option(help="Demo payments to send.")] = 40,
) -> None:
    """The embedded default: broker, worker and demo traffic, with a live table."""
    from streams.demo import run_demo

    code = run_demo(settings_of(ctx), once=once, payments=payments)
    raise typer.Exit(code)


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
