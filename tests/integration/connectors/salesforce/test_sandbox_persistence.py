"""Restart with the same SQLite file, and the command-line entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from connectors.salesforce.sandbox import make_salesforce, start_sandbox


def test_data_and_modstamp_order_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "org.sqlite"
    with start_sandbox(db_path=db) as first:
        sf = first.client()
        kept = sf.Payment__c.create({"External_Id__c": "keep", "Amount__c": 9.5})["id"]
        sf.Payment__c.update(kept, {"Status__c": "confirmed"})
        staff_id = first.user_id("staff")
        sf_staff = first.client(user="staff")
        other = sf_staff.Payment__c.create({"External_Id__c": "other"})["id"]
        before = first.admin.records("Payment__c")
        last_stamp = before[-1]["SystemModstamp"]

    with start_sandbox(db_path=db) as second:
        assert second.admin.records("Payment__c") == before
        sf = second.client()
        record = sf.Payment__c.get_by_custom_id("External_Id__c", "keep")
        assert record["Id"] == kept and record["Status__c"] == "confirmed"
        assert sf.Payment__c.get(other)["CreatedById"] == staff_id == second.user_id("staff")
        fresh = sf.Payment__c.create({"External_Id__c": "new"})["id"]
        assert fresh not in (kept, other)  # the id counter resumed
        assert sf.Payment__c.get(fresh)["SystemModstamp"] > last_stamp
        newer = sf.query(f"SELECT Id FROM Payment__c WHERE SystemModstamp > {last_stamp}")
        assert [r["Id"] for r in newer["records"]] == [fresh]


def test_command_line_prints_how_to_connect(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connectors.salesforce.sandbox",
            "--port",
            "0",
            "--db",
            str(tmp_path / "cli.sqlite"),
            "--cert-dir",
            str(tmp_path / "tls"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        info: dict[str, str] = {}
        while "SALESFORCE_USER_ID_INTEGRATION" not in info:
            line = process.stdout.readline()
            assert line, "sandbox exited before printing its address"
            key, _, value = line.strip().partition("=")
            info[key] = value
        assert info["SALESFORCE_INSTANCE_URL"].startswith("https://127.0.0.1:")
        sf = make_salesforce(
            info["SALESFORCE_INSTANCE_URL"],
            info["SALESFORCE_TOKEN_STAFF"],
            info["SALESFORCE_CERT_PATH"],
        )
        rid = sf.Mandate__c.create({"Status__c": "active"})["id"]
        assert sf.Mandate__c.get(rid)["CreatedById"] == info["SALESFORCE_USER_ID_STAFF"]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
