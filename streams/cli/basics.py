"""``paybus broker``, ``paybus config``, ``paybus topics ...``."""

from __future__ import annotations

import json
import signal
import threading
from typing import Annotated

import typer
from rich.table import Table

from streams.admin import PARTITIONS_HELP, create_topics, describe_topics, partition_mismatches
from streams.broker import BrokerUnavailable, EmbeddedBroker
from streams.cli.common import console, fail, settings_of
from streams.topics import TopicMap

topics_app = typer.Typer(
    help="Create, list and render (as deploy files) the bus's topics.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.command("broker")(broker)
    app.command("config")(config)
    app.add_typer(topics_app, name="topics")


def broker(
    port: Annotated[
        int, typer.Option(help="Port on 127.0.0.1 (0 = a free one).", min=0, max=65535)
    ] = 9092,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, in memory) until Ctrl-C."""
    from streams.dev.guide import export_line  # the dev stack prints the same line

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        running = EmbeddedBroker(host=host, port=port).start()
    except BrokerUnavailable as exc:
        fail(str(exc))
    console.print(f"embedded broker ready: [bold]{running.bootstrap}[/]", highlight=False)
    console.print(export_line(running.bootstrap), highlight=False)
    try:
        while not stop.wait(0.5):
            if running.process is not None and running.process.poll() is not None:
                fail(f"broker exited with status {running.process.returncode}")
    finally:
        running.stop()
        console.print("broker stopped")


def config(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective configuration (secrets masked)."""
    data = settings_of(ctx).masked()
    if as_json:
        console.print_json(json.dumps(data))
        return
    table = Table(title="paybus configuration", show_lines=False)
    table.add_column("setting")
    table.add_column("value")
    for key, value in _flatten(data):
        table.add_row(key, str(value))
    console.print(table)


def _flatten(data: dict[str, object], prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


@topics_app.command("create")
def topics_create(ctx: typer.Context) -> None:
    """Create every topic of the topic map that is missing (idempotent); fail when one exists
    with another partition count than configured."""
    settings = settings_of(ctx)
    specs = TopicMap.from_settings(settings).all()
    try:
        result = create_topics(settings.bootstrap_servers, specs)
        mismatched = partition_mismatches(settings.bootstrap_servers, specs)
    except Exception as exc:
        fail(f"cannot create topics on {settings.bootstrap_servers}: {exc}")
    for name, what in result.items():
        console.print(f"{what:8} {name}", highlight=False)
    if mismatched:
        fail(PARTITIONS_HELP + ":\n" + "\n".join(mismatched))


@topics_app.command("render")
def topics_render(
    fmt: Annotated[str, typer.Option("--format", help="strimzi or compose")] = "strimzi",
) -> None:
    """Deploy artefacts from the topic map (deploy/k8s/topics.yaml is this output)."""
    from streams.render import FORMATS, deploy_topic_map, render_topics

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}")
    typer.echo(render_topics(deploy_topic_map(), fmt), nl=False)


@topics_app.command("list")
def topics_list(ctx: typer.Context) -> None:
    """Show the topic map with the partition counts the cluster reports."""
    settings = settings_of(ctx)
    specs = TopicMap.from_settings(settings).all()
    try:
        states = {
            s.name: s for s in describe_topics(settings.bootstrap_servers, [t.name for t in specs])
        }
    except Exception as exc:
        fail(f"cannot reach {settings.bootstrap_servers}: {exc}")
    table = Table(title=f"paybus topics on {settings.bootstrap_servers}")
    table.add_column("topic", no_wrap=True)
    for col in ("partitions", "key", "value", "cleanup", "written by", "read by"):
        table.add_column(col)
    for spec in specs:
        state = states[spec.name]
        parts = str(state.partitions) if state.exists else "[red]missing[/]"
        if state.exists and state.partitions != spec.partitions:
            parts = f"[red]{state.partitions} (configured {spec.partitions})[/]"
        table.add_row(
            spec.name,
            parts,
            spec.key,
            spec.value_schema,
            spec.cleanup_policy,
            spec.writers,
            spec.readers,
        )
    console.print(table)
