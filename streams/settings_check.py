"""``PAYBUS_*`` variables that name no setting: said, not silently ignored. No I/O.

A nested setting with a wrong name is refused by its section (``extra="forbid"``), but
pydantic-settings ignores a top-level one, so a typo left the default in effect without a
word. The CLI warns of each on stderr, with the nearest setting.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from streams.settings import Settings

#: ``PAYBUS_*`` variables read by tools other than the settings (the GoCardless sandbox's own
#: token, the fault-injection tests' knobs, deploy/compose's image tag and replica count, set
#: in the shell that runs ``docker compose``): not settings, and not typos either.
_TOOL_VARIABLES = (
    "PAYBUS_GOCARDLESS_SANDBOX_TOKEN",
    "PAYBUS_FAULT_",
    "PAYBUS_VERSION",
    "PAYBUS_WORKERS",
)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``PAYBUS_*`` variables of ``environ`` that name no setting, each with the nearest one.

    A nested setting with a wrong name is refused (its section forbids extras), but a top-level
    one is silently ignored: ``PAYBUS_PARTITION=4`` or ``PAYBUS_STRIPE_API_KEY`` (one
    underscore) left the default in effect without a word."""
    names = {f"PAYBUS_{name.upper()}" for name in Settings.model_fields}
    out: list[str] = []
    for variable in sorted(name.upper() for name in environ):  # read case-insensitively
        if not variable.startswith("PAYBUS_") or variable.startswith(_TOOL_VARIABLES):
            continue
        if variable.split("__", 1)[0] in names:
            continue  # a section's own fields are checked by the section
        head, _, rest = variable.removeprefix("PAYBUS_").partition("_")
        if rest and "__" not in variable and f"PAYBUS_{head}" in names:
            near = [f"PAYBUS_{head}__{rest}"]  # PAYBUS_STRIPE_API_KEY: a section's field
        else:
            bare = variable.split("__", 1)[0].removeprefix("PAYBUS_")
            fields = sorted(name.removeprefix("PAYBUS_") for name in names)
            near = [f"PAYBUS_{m}" for m in difflib.get_close_matches(bare, fields, n=1)]
        hint = f" (did you mean {near[0]}?)" if near else ""
        out.append(f"{variable} is not a setting and is ignored{hint}")
    return out
