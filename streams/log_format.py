"""The worker's log line: one record, one line, whatever the values it quotes contain.

Log messages quote values that come from outside: aggregate and record ids from the CRM (the
poller, ``POST /events/crm``), PSP error messages, exception texts. A value holding a line
break would start what reads as a new record (``...\\n2026-12-04 10:00:00 ERROR ...``): a
forged log line, or a real one hidden from a line-based shipper's parser. The formatter
escapes CR and LF (and other C0 controls but tab) in the message, so every record's message
stays on its own line; a traceback still follows on the lines after it, as it always has.
Card and bank account numbers are masked in the whole output (:mod:`streams.redaction`).
"""

from __future__ import annotations

import logging
import re

from streams.redaction import redact

__all__ = ["FORMAT", "SingleLineFormatter", "escape_controls"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def escape_controls(text: str) -> str:
    """``text`` with line breaks and other control characters as ``\\n``-style escapes."""
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class SingleLineFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose ``%(message)s`` never spans lines, and whose output
    (traceback included) has card and bank account numbers masked.

    Masking here is the net under every log call: a PSP error quoted in a warning (a failed
    reconcile or janitor look-up), an exception's text in a traceback, whatever a library
    logs. Redacting at each call site would miss the next one written.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
