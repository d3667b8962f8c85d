"""A value quoted in a log message cannot start a forged log line."""

from __future__ import annotations

import io
import logging

from streams.log_format import FORMAT, SingleLineFormatter, escape_controls


def test_line_breaks_and_controls_are_escaped_tabs_and_text_kept() -> None:
    assert escape_controls("pay-1\n2026-12-04 ERROR x\r\x1b[2J\x00") == (
        "pay-1\\n2026-12-04 ERROR x\\r\\x1b[2J\\x00"
    )
    assert escape_controls("a\tb é ünïcode") == "a\tb é ünïcode"


def logged(warning: tuple[str, ...], exception: str) -> str:
    """What a worker's formatter writes for a warning and then an exception with a traceback."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SingleLineFormatter(FORMAT))
    log = logging.getLogger("test_log_format")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning(*warning)
        try:
            raise ValueError(exception)
        except ValueError:
            log.exception("unexpected")
    finally:
        log.removeHandler(handler)
    return stream.getvalue()


def test_one_record_is_one_line_and_a_traceback_still_follows() -> None:
    text = logged(
        ("janitor: look-up of %s failed", "pay-1\n2026-12-04 10:00:00 ERROR forged"), "boom"
    )
    lines = text.splitlines()
    assert lines[0].endswith("look-up of pay-1\\n2026-12-04 10:00:00 ERROR forged failed")
    assert lines[1].endswith("unexpected") and lines[2].startswith("Traceback")


def test_card_and_account_numbers_never_reach_the_log() -> None:
    text = logged(
        (
            "reconcile of %s via stripe failed: %s",
            "pay-1",
            "No such PaymentMethod: '4242 4242 4242 4242'",
        ),
        "IBAN GB82 WEST 1234 5698 7654 32 refused",
    )
    assert "4242" not in text and "5698" not in text and "WEST" not in text
    assert "reconcile of pay-1 via stripe failed" in text and "Traceback" in text
