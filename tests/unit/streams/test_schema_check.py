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


# --- every writer schema stays readable ------------------------------------------------------

#: CrmChange as written from 68d8b34 to a0905c0 (mandate_ref, no reason): never frozen into a
#: release, so dropped from the known writers when `reason` was added. Its records (pending
#: intents, retry envelopes, dead letters, an upstream publisher still on the earlier SDK)
#: were dead-lettered as "unknown schema fingerprint".
BETWEEN_RELEASES = "41adee0a67bb52ca"


def _writer(fingerprint: str) -> dict:  # type: ignore[type-arg]
    release = json.loads((SCHEMA_DIR / "release.json").read_text())
    items = [*release["schemas"].values(), *release.get("writers", ())]
    (item,) = [i for i in items if i["fingerprint"] == fingerprint]
    return item["schema"]  # type: ignore[no-any-return]


def test_a_crm_change_written_before_reason_existed_is_read() -> None:
    """Encoded with each earlier writer (the 0.1.0 release and the one current until today),
    decoded by today's reader: ``reason`` reads as None (the old test re-encoded with the
    current schema, so it could not fail)."""
    from datetime import UTC, datetime

    from streams.codec import AvroCodec, SchemaEntry, _write

    codec = AvroCodec()
    record = {
        "change_id": "chg-1", "aggregate_id": "pay-1", "aggregate_type": "payment",
        "intent": "cancel", "occurred_at": datetime(2026, 12, 1, tzinfo=UTC),
        "source": "salesforce", "metadata": {},
    }  # fmt: skip
    released = json.loads((SCHEMA_DIR / "release.json").read_text())["schemas"]["CrmChange"]
    for fingerprint in (released["fingerprint"], BETWEEN_RELEASES):
        entry = SchemaEntry.from_json(_writer(fingerprint))
        if "mandate_ref" in {f["name"] for f in entry.json["fields"]}:
            record["mandate_ref"] = None
        data = b"\xc3\x01" + entry.fingerprint + _write(entry, record)
        decoded = codec.decode(data, "CrmChange")
        assert decoded["change_id"] == "chg-1" and decoded["reason"] is None, fingerprint


def test_a_change_incompatible_with_an_earlier_writer_is_refused(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    release = json.loads((d / "release.json").read_text())
    old = json.loads(json.dumps(release["schemas"]["PaymentEvent"]))
    old["schema"]["fields"].append({"name": "legacy", "type": "int", "doc": "x"})
    from streams.codec import SchemaEntry

    old["fingerprint"] = SchemaEntry.from_json(old["schema"]).fingerprint.hex()
    release["writers"] = [*release.get("writers", ()), {"name": "PaymentEvent", **old}]
    (d / "release.json").write_text(json.dumps(release))
    # An int field the current schema reads as a string: no reader for that writer.
    _edit(
        d,
        "PaymentEvent",
        lambda s: s["fields"].append(
            {"name": "legacy", "type": ["null", "string"], "default": None, "doc": "now text"}
        ),
    )
    verdict = {r.name: r for r in check(d)}["PaymentEvent"]
    assert verdict.status == "incompatible" and old["fingerprint"] in verdict.detail


def test_freeze_keeps_every_earlier_writer(tmp_path: Path) -> None:
    from streams.schema_check import freeze

    d = _copy(tmp_path)
    before = json.loads((d / "release.json").read_text())
    path = freeze("9.9.9", d)
    after = json.loads(path.read_text())
    kept = {w["fingerprint"] for w in after.get("writers", ())}
    assert BETWEEN_RELEASES in kept
    # the release replaced: its changed schemas are writers now
    assert before["schemas"]["CrmChange"]["fingerprint"] in kept
    assert before["schemas"]["PaymentCommand"]["fingerprint"] in kept
    assert before["schemas"]["PaymentEvent"]["fingerprint"] not in kept  # still current
    assert all(r.ok for r in check(d))
