"""The CRM writer's outcomes: the name each update ends with, its error log, and what an
alert e-mail may show of it (split from :mod:`streams.agents.crm_writer`, which decides when
to write and retry)."""

from __future__ import annotations

import copy

from connectors.errors import ConnectorError
from connectors.salesforce.writer import Outcome, UpdateResult
from streams.records import StatusUpdate
from streams.redaction import redact

WRITTEN = "written"
SKIPPED_OLDER = "skipped_older"
NOT_FOUND = "not_found"
FAILED_PERMANENT = "failed_permanent"
RETRIES_EXHAUSTED = "retries_exhausted"


def disposition(result: UpdateResult) -> str:
    """The final outcome name of one update's last write result."""
    if result.outcome is Outcome.WRITTEN:
        return WRITTEN
    if result.outcome is Outcome.SKIPPED_OLDER:
        return SKIPPED_OLDER
    if result.outcome is Outcome.NOT_FOUND:
        # A named record that is gone needs a person; an aggregate the CRM never held does not.
        return FAILED_PERMANENT if result.update.crm_record_id else NOT_FOUND
    return RETRIES_EXHAUSTED if result.should_retry else FAILED_PERMANENT


def note_error(log_: list[str], attempt: int, error: ConnectorError) -> None:
    """Add an attempt's error to an update's error log; a repeat of the last one widens its
    range (``attempts 1-3: ...``) instead: an outage of hours would otherwise write thousands
    of identical lines into the dead letter."""
    text = str(error)
    if log_ and log_[-1].endswith(f": {text}"):
        first = log_[-1].split(" ", 2)[1].rstrip(":").split("-")[0]
        log_[-1] = f"attempts {first}-{attempt}: {text}"
    else:
        log_.append(f"attempt {attempt}: {text}")


def redacted(result: UpdateResult) -> UpdateResult:
    """``result`` fit for an e-mail: no card or account numbers in the reason or the error
    (a PSP's decline text, or a CRM error echoing a field value, may carry one)."""
    update = result.update
    if update.reason:
        update = StatusUpdate(**{**update.asdict(), "reason": redact(update.reason)})
    error = result.error
    if error is not None:
        error = copy.copy(error)
        error.message = redact(error.message)
    return UpdateResult(update, result.outcome, result.object_name, result.record_id, error)
