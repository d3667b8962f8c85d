"""``paybus schemas check``: every schema parses, and no change breaks the last release.

``schemas/release.json`` records, for the last release, each schema's CRC-64-AVRO fingerprint
and full JSON. A current schema is backward compatible when it can read everything written
with the released one (Avro's schema resolution rules, checked with the ``avro`` package's
reader/writer compatibility checker). ``paybus schemas freeze`` rewrites the file at release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from schemas import SCHEMA_DIR
from streams.codec import RELEASE_FILE, SchemaEntry


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one schema."""

    name: str
    status: str  # "unchanged", "compatible", "new", "incompatible", "invalid", "removed"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in {"unchanged", "compatible", "new"}


def _load_current(directory: Path) -> tuple[dict[str, dict[str, Any]], list[CheckResult]]:
    current: dict[str, dict[str, Any]] = {}
    errors: list[CheckResult] = []
    for path in sorted(directory.glob("*.avsc")):
        try:
            raw = json.loads(path.read_text())
            SchemaEntry.from_json(raw)
            avro.schema.parse(json.dumps(raw))
        except Exception as exc:
            errors.append(CheckResult(path.stem, "invalid", f"{path.name}: {exc}"))
            continue
        if raw.get("name") != path.stem:
            errors.append(
                CheckResult(
                    path.stem, "invalid", f"{path.name}: record name is {raw.get('name')!r}"
                )
            )
            continue
        missing_doc = [f["name"] for f in raw.get("fields", []) if not f.get("doc")]
        if missing_doc:
            errors.append(
                CheckResult(
                    path.stem, "invalid", f"undocumented field(s): {', '.join(missing_doc)}"
                )
            )
            continue
        current[path.stem] = raw
    return current, errors


def check(directory: Path = SCHEMA_DIR) -> list[CheckResult]:
    """Judge every schema in ``directory`` against its release file."""
    current, results = _load_current(directory)
    release_path = directory / RELEASE_FILE
    released: dict[str, Any] = {}
    writers: list[dict[str, Any]] = []
    if release_path.exists():
        data = json.loads(release_path.read_text())
        released = data.get("schemas", {})
        writers = list(data.get("writers", ()))
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    for name, raw in current.items():
        old = released.get(name)
        if old is None:
            results.append(CheckResult(name, "new"))
            continue
        new_fp = SchemaEntry.from_json(raw).fingerprint.hex()
        reader = avro.schema.parse(json.dumps(raw))
        # Every schema records of this name were written with must stay readable: the
        # release's, and the other writers the file keeps (earlier ones, in between).
        olds = [old, *(w for w in writers if w.get("name") == name)]
        broken = []
        for writer_json in olds:
            if writer_json["fingerprint"] == new_fp:
                continue
            writer = avro.schema.parse(json.dumps(writer_json["schema"]))
            verdict = checker.get_compatibility(reader, writer)
            if verdict.compatibility is not SchemaCompatibilityType.compatible:
                detail = "; ".join(sorted(verdict.messages)) or "not backward compatible"
                locations = ", ".join(sorted(verdict.locations))
                broken.append(f"{detail} (at {locations}; writer {writer_json['fingerprint']})")
        if broken:
            results.append(CheckResult(name, "incompatible", "; ".join(broken)))
        elif new_fp == old["fingerprint"]:
            results.append(CheckResult(name, "unchanged"))
        else:
            results.append(
                CheckResult(name, "compatible", f"fingerprint {old['fingerprint']} -> {new_fp}")
            )
    for name in sorted(set(released) - set(current) - {r.name for r in results}):
        results.append(CheckResult(name, "removed", "a released schema was deleted"))
    return sorted(results, key=lambda r: r.name)


def freeze(version: str, directory: Path = SCHEMA_DIR) -> Path:
    """Record the current schemas as the release ``version``.

    A blank version is refused: the file would say nothing about which release it pins, and
    the next ``schemas check`` failure could not be traced to one.
    """
    if not version.strip():
        raise ValueError("the release version is empty: give one, e.g. paybus schemas freeze 1.4.0")
    current, errors = _load_current(directory)
    if errors:
        raise ValueError("; ".join(e.detail for e in errors))
    schemas = {
        name: {"fingerprint": SchemaEntry.from_json(raw).fingerprint.hex(), "schema": raw}
        for name, raw in sorted(current.items())
    }
    # Nothing once written is forgotten: the release being replaced and the writers it kept
    # join the writers (records written with them are still in topics and dead letters).
    path = directory / RELEASE_FILE
    before = json.loads(path.read_text()) if path.exists() else {}
    writers: dict[str, dict[str, Any]] = {}
    previous = [
        *({"name": n, **item} for n, item in before.get("schemas", {}).items()),
        *before.get("writers", ()),
    ]
    for item in previous:
        if schemas.get(item["name"], {}).get("fingerprint") != item["fingerprint"]:
            writers.setdefault(item["fingerprint"], item)
    data: dict[str, Any] = {"release": version, "schemas": schemas}
    if writers:
        data["writers"] = sorted(writers.values(), key=lambda w: (w["name"], w["fingerprint"]))
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
