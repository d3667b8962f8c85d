"""Masking card and bank account numbers in free text bound for Kafka, the CRM or an e-mail.

DESIGN.md's rule: card numbers (PANs) and bank account numbers never travel on Kafka nor
reach the CRM. paybus itself never puts one in a record, but free text it passes on can carry
one: a PSP's failure message quoting what it was sent, a decline reason, an exception's
message. :func:`redact` is applied where such text enters a record (a ``failed`` event's
reason, a parked retry's error, a dead letter's reason and error log) and again before the
CRM and alert e-mails, so a number that reached a reason never goes further.

The patterns err towards masking: a false positive costs a few characters of an error
message, a miss a PCI DSS finding. They are bounded by letters and digits, not ``\\b``: an
underscore is a word character, so ``\\b`` missed ``card_4242424242424242``, while a digit run
inside an id (Salesforce's ``a01000000000042AAA``) must stay as it is.

* PAN: 13-19 digits, each optionally preceded by one space or dash (``4242 4242 4242 4242``,
  ``4242-4242-4242-4242``).
* IBAN: two letters, two check digits and 11-30 alphanumerics, in either case, compact or in
  space-separated groups of four (``GB82 WEST 1234 5698 7654 32``, ``gb82west12345698765432``).
:func:`sensitive_fields` is the strict check of structured records at the bus's doors (a CRM
change must carry tokens, never numbers): only checksummed numbers count there, a card number
passing Luhn's check and an IBAN passing ISO 13616's mod 97, so an order number of 16 digits
in a description is not mistaken for a card.

* UK sort code (``20-00-00``, ``20 00 00``) and an account number of 6-10 digits after the
  words account/acct/a/c (``account number 55779911``); together without words they are 14
  digits, a PAN to the first pattern.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["ID_FIELDS", "MASK", "masked_fields", "redact", "screen", "sensitive_fields"]

MASK = "[redacted]"

_IBAN_RE = re.compile(
    r"(?<![0-9A-Za-z])[A-Za-z]{2}[0-9]{2}(?: ?[0-9A-Za-z]{4}){2,7}(?: ?[0-9A-Za-z]{1,3})?"
    r"(?![0-9A-Za-z])"
)
#: The shortest IBAN (Norway's) has 15 characters.
_IBAN_MIN = 15
_PAN_RE = re.compile(r"(?<![0-9A-Za-z])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
_SORT_CODE_RE = re.compile(r"(?<![0-9A-Za-z])[0-9]{2}([ -])[0-9]{2}\1[0-9]{2}(?![0-9])")
_ACCOUNT_RE = re.compile(
    r"(?P<label>\b(?:account|acct|a/c)\b[^0-9\n]{0,24}?)(?<![0-9A-Za-z])[0-9](?:[ -]?[0-9]){5,9}"
    r"(?![0-9])",
    re.IGNORECASE,
)


def _iban(match: re.Match[str]) -> str:
    found = match.group()
    return MASK if len(found.replace(" ", "")) >= _IBAN_MIN else found


def redact(text: str) -> str:
    """``text`` with anything shaped like a card number, an IBAN or UK bank details masked."""
    text = _IBAN_RE.sub(_iban, text)
    text = _PAN_RE.sub(MASK, text)
    text = _SORT_CODE_RE.sub(MASK, text)
    return _ACCOUNT_RE.sub(lambda m: m.group("label") + MASK, text)


def _luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _iban_valid(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


#: A CRM change's fields holding ids that systems generate (hashes, UUIDs, record ids): one
#: in a thousand of those holds a digit run passing Luhn's or mod 97's check by chance (the
#: poller's ``sf-<hex>`` change ids, a UUID's ``53033190-7660-4...``), so an id is sensitive
#: only when it is a card number or an IBAN as a whole.
ID_FIELDS = frozenset({"change_id", "aggregate_id", "crm_record_id", "mandate_id", "payment_id"})


def _found(pattern: re.Pattern[str], text: str, whole: bool) -> list[re.Match[str]]:
    if whole:
        return [m] if (m := pattern.fullmatch(text.strip())) else []
    return list(pattern.finditer(text))


#: ``str.translate`` table deleting digits: counting them in C, not a Python loop.
_NO_DIGITS = str.maketrans("", "", "0123456789")
#: The fewest digits a card number has.
_PAN_MIN = 13


def _checksummed(text: str, *, whole: bool = False) -> bool:
    """Whether ``text`` holds (``whole``: is) a Luhn-valid card number or a mod-97-valid
    IBAN.

    Runs on every field of every intent the router takes (and at the doors): most values are
    short words and codes, dismissed by their length or digit count before any pattern runs.
    """
    if len(text) < _PAN_MIN:
        return False
    digits = len(text) - len(text.translate(_NO_DIGITS))
    if digits < 2:  # an IBAN has two check digits at least, a card number thirteen
        return False
    for match in _found(_PAN_RE, text, whole) if digits >= _PAN_MIN else ():
        if _luhn(re.sub(r"[ -]", "", match.group())):
            return True
    for match in _found(_IBAN_RE, text, whole) if len(text) >= _IBAN_MIN else ():
        if len(match.group().replace(" ", "")) >= _IBAN_MIN and _iban_valid(match.group()):
            return True
    return False


def screen(record: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The names of ``record``'s text fields (and ``metadata`` entries, as ``metadata.KEY``)
    that hold a card number or an IBAN (the :data:`ID_FIELDS`: that are one), and of those
    that hold :data:`MASK` (what the CRM poller masked): one pass, as the router makes it for
    every intent. Field names only: a refusal never quotes the value."""
    sensitive: list[str] = []
    masked: list[str] = []
    for name, value in record.items():
        if isinstance(value, str):
            if _checksummed(value, whole=name in ID_FIELDS):
                sensitive.append(name)
            if MASK in value:
                masked.append(name)
        elif isinstance(value, Mapping):
            for key, v in value.items():
                if isinstance(v, str):
                    if _checksummed(v):
                        sensitive.append(f"{name}.{key}")
                    if MASK in v:
                        masked.append(f"{name}.{key}")
    return sensitive, masked


def sensitive_fields(record: Mapping[str, Any]) -> list[str]:
    """The fields of ``record`` holding a card number or an IBAN (see :func:`screen`)."""
    return screen(record)[0]


def masked_fields(record: Mapping[str, Any]) -> list[str]:
    """The fields of ``record`` holding :data:`MASK` (see :func:`screen`)."""
    return screen(record)[1]
