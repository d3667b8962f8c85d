"""The bench's result rows: verdicts against targets, the rich table and the JSON file.

Every figure is a :class:`Row`. Rows that compare against a baseline carry the baseline's
value and the ratio, because on shared 2-core machines only ratios within one run mean
anything; absolute rates are printed for context.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

Verdict = Literal["pass", "fail", "info", "not yet", "error"]


@dataclass(frozen=True)
class Target:
    """A goal for a row: ``ratio`` or ``value`` compared with ``limit``."""

    on: Literal["ratio", "value"]
    op: Literal[">=", "<=", "<"]
    limit: float
    text: str

    def met(self, row: Row) -> bool | None:
        got = row.ratio if self.on == "ratio" else row.value
        if got is None:
            return None
        if self.op == ">=":
            return got >= self.limit
        if self.op == "<=":
            return got <= self.limit
        return got < self.limit


@dataclass
class Row:
    """One measured figure (or a placeholder for one not measurable yet)."""

    key: str
    section: str
    measure: str
    value: float | None
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    target: Target | None = None
    note: str = ""
    pending: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline_value:
            return None
        return self.value / self.baseline_value

    @property
    def verdict(self) -> Verdict:
        if self.pending:
            return "not yet"
        if self.value is None:
            return "error"
        if self.target is None:
            return "info"
        met = self.target.met(self)
        return "error" if met is None else ("pass" if met else "fail")

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = self.target.text if self.target else None
        data["ratio"] = self.ratio
        data["verdict"] = self.verdict
        return data


def not_yet(
    key: str, section: str, measure: str, unit: str, target: Target | None, why: str
) -> Row:
    """A slot for a figure whose stage does not exist yet."""
    return Row(key, section, measure, None, unit, target=target, note=why, pending=True)


def failed(key: str, section: str, measure: str, unit: str, error: BaseException) -> Row:
    """A row for a measurement that raised: the run goes on, the table says what broke."""
    return Row(key, section, measure, None, unit, note=f"{type(error).__name__}: {error}"[:300])


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile of an ascending list (nearest rank, as every latency row uses)."""
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


_STYLE = {"pass": "green", "fail": "red", "error": "bold red", "not yet": "dim", "info": "cyan"}


def render(rows: list[Row], console: Console, title: str) -> None:
    """The final table: measure, value, unit, baseline, ratio, target, verdict."""
    table = Table(title=title, show_lines=False, header_style="bold")
    for name in ("measure", "value", "unit", "baseline", "ratio", "target", "verdict"):
        table.add_column(name, justify="right" if name in ("value", "ratio") else "left")
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            table.add_section()
            table.add_row(f"[bold]{section}[/]", "", "", "", "", "", "")
        base = f"{row.baseline} {fmt(row.baseline_value)}" if row.baseline else ""
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else ""
        verdict = row.verdict
        table.add_row(
            f"  {row.measure}",
            fmt(row.value),
            row.unit,
            base,
            ratio,
            row.target.text if row.target else "",
            f"[{_STYLE[verdict]}]{verdict}[/]",
        )
    console.print(table)
    notes = [(r.measure, r.note) for r in rows if r.note]
    for measure, note in notes:
        console.print(f"[dim]· {measure}: {note}[/]", highlight=False)


def environment() -> dict[str, Any]:
    """Where the figures were taken (they only compare within one such run)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_avg_at_start": load,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def write_json(out_dir: Path, started: datetime, meta: dict[str, Any], rows: list[Row]) -> Path:
    """Write ``<out_dir>/<YYYY-MM-DD-HHMMSS>.json`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{started:%Y-%m-%d-%H%M%S}.json"
    body = {"meta": meta, "rows": [r.as_json() for r in rows]}
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return path
