"""``paybus dev --once``: the whole product on the embedded default, as ``make run`` shows it.

Broker, localstripe, the GoCardless and Salesforce sandboxes and a worker with every role;
CRM records for card payments (one declined), mandates, direct debits (one scripted to fail)
and refunds; webhooks shuffled and duplicated. It exits 0 only when every CRM record shows what
its PSP shows. Its output is captured (not a terminal): plain text, wide enough for the table
without COLUMNS, and the run's temp folder is gone after the clean run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.timeout(400)]


def test_dev_once_ends_with_crm_matching_the_psps() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PAYBUS_") and k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")
    }
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "dev", "--once", "--timeout", "240"],
        env=env, capture_output=True, text=True, timeout=380,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "every CRM record shows what its PSP shows" in out
    # The sandbox org has deploy/salesforce's rules: every object is written unread.
    assert "Mandate__c upsert, Payment__c upsert, Refund__c upsert" in out
    final = out.rsplit("vs PSPs", 1)[1]
    for record in ("demo-card-04", "demo-mandate-03", "demo-refund-card-01", "demo-debit-02"):
        assert record in final
    assert "failed" in final and "paid_out" in final and "partially_refunded" in final
    assert " no " not in final
    assert "\x1b" not in out  # no cursor or redraw escapes in a captured run
    assert "demo-mandate-01" in final and "…" not in final  # not cut at 80 columns
    # How to reach it from another shell, with the stand-ins' dev-only secrets.
    assert re.search(r"^  export PAYBUS_BOOTSTRAP_SERVERS=127\.0\.0\.1:\d+$", out, re.M)
    assert "whsec_paybus_dev" in out and "gc_webhook_secret_dev" in out
    folder = re.search(r"\(log (\S+)/worker\.log", out)
    assert folder is not None and not os.path.exists(folder.group(1))
