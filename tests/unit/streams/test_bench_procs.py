"""What a failed bench stack says about its workers: the last warning of each, or its exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streams.bench.procs import Worker, diagnosis


def test_each_role_reports_its_last_warning_or_error_or_that_it_is_quiet(tmp_path: Path) -> None:
    noisy, quiet = tmp_path / "crm.log", tmp_path / "web.log"
    noisy.write_text(
        "2026-12-04 18:00:00,000 WARNING aiokafka: first\n"
        "2026-12-04 18:00:01,000 INFO faust: fine\n"
        "2026-12-04 18:00:02,000 ERROR streams.agents.crm_writer: the CRM refused\n"
        "2026-12-04 18:00:03,000 INFO faust: still fine\n"
    )
    quiet.write_text("2026-12-04 18:00:00,000 INFO faust: all good\n")
    workers = {
        "crm": Worker(["python", "-m", "x"], {}, noisy),
        "web": Worker(["python", "-m", "y"], {}, quiet),
    }
    said = diagnosis(workers)
    assert said == (
        "crm: 2026-12-04 18:00:02,000 ERROR streams.agents.crm_writer: the CRM refused; "
        "web: running, log quiet"
    )


def test_a_worker_that_exited_says_how(tmp_path: Path) -> None:
    log = tmp_path / "seq.log"
    log.write_text("Traceback ...\nRuntimeError: boom\n")
    worker = Worker([sys.executable, "-c", "raise SystemExit(3)"], {}, log)
    worker.proc = subprocess.Popen(worker.args)
    worker.proc.wait(10)
    said = diagnosis({"sequencer": worker})
    assert said.startswith("sequencer: ") and "exited 3" in said and "RuntimeError: boom" in said
