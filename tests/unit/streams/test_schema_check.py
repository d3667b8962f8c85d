"""``paybus schemas check``: compatible changes pass, breaking ones fail with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from schemas import SCHEMA_DIR
from streams.schema_check import check


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, target)
    return target


def _edit(directory: Path, name: str, edit) -> None:  # type: ignore[no-untyped-def]
    path = directory / f"{name}.avsc"
    schema = json.loads(path.read_text())
    edit(schema)
    path.write_text(json.dumps(schema))


def test_shipped_schemas_pass() -> None:
    results = check()
    assert results and all(r.ok for r in results), [r for r in results if not r.ok]


def test_adding_an_optional_field_is_compatible(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    _edit(
        d,
        "PaymentEvent",
        lambda s: s["fields"].append(
            {"name": "note", "type": ["null", "string"], "default": None, "doc": "a note"}
        ),
    )
    verdict = {r.name: r for r in check(d)}["PaymentEvent"]
    assert verdict.status == "compatible" and verdict.ok


def test_adding_a_required_field_is_refused(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    _edit(
        d,
        "StatusUpdate",
        lambda s: s["fields"].append({"name": "tenant", "type": "string", "doc": "no default"}),
    )
    verdict = {r.name: r for r in check(d)}["StatusUpdate"]
    assert verdict.status == "incompatible"
    assert "tenant" in verdict.detail


def test_changing_a_type_is_refused(tmp_path: Path) -> None:
    d = _copy(tmp_path)

    def to_string(s: dict) -> None:  # type: ignore[type-arg]
        for f in s["fields"]:
            if f["name"] == "seq":
                f["type"] = "string"

    _edit(d, "StatusUpdate", to_string)
    assert {r.name: r for r in check(d)}["StatusUpdate"].status == "incompatible"


def test_unparseable_and_undocumented_schemas_are_invalid(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "Broken.avsc").write_text("{not json")
    _edit(d, "CrmChange", lambda s: s["fields"][0].pop("doc"))
    results = {r.name: r for r in check(d)}
    assert results["Broken"].status == "invalid"
    assert results["CrmChange"].status == "invalid"
    assert "undocumented" in results["CrmChange"].detail
