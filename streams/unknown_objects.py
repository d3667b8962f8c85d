"""A PSP answering 404 for an object it created for paybus: the key is another account's.

Stripe PaymentIntents and GoCardless payments and mandates are never deleted. A cancel or
refund names its object by the id the PSP itself gave paybus (``psp_object_id``, filled in
from the connector workers' ``objects`` table; the CRM never types it), so a 404 for it means
paybus is calling another account than the one that created it: another Stripe account's key,
a GoCardless token of another organisation, a test key for a live payment. That is paybus's
configuration, like a refused key, and the payment has not failed. Refused, the 404 became a
``failed`` event: a paid payment shown failed in the CRM, which staff may charge again. Such a
command is parked instead, marked as waiting for the key like one whose credentials were
refused (see :func:`streams.parking.due_for` and ``PaybusPspCredentialsRefused``); when the
retry schedule runs out it is dead-lettered with the 404 in its reason, never failed.

Pure rules, no I/O: the command stage (:class:`streams.agents.commands.Shared`) applies them.
"""

from __future__ import annotations

from typing import TypeGuard

from connectors.errors import AuthenticationError, ConnectorError, NotFoundError
from streams.records import PaymentCommand

#: Operations that act on an object the PSP created for paybus, named by the id it gave.
ACTS_ON_OBJECT = ("cancel", "refund")


def another_account(command: PaymentCommand, exc: BaseException) -> bool:
    """Whether ``exc``, raised by ``command``'s call, says the PSP does not know an object it
    created for paybus (see the module doc): a :class:`NotFoundError` to a cancel or refund
    that names its object (``psp_object_id``, after the ``objects`` table filled it in).

    Any other 404 stays a refusal (a ``failed`` event with the reason): an id the CRM typed,
    such as the mandate a payment is to be collected on, or a mandate cancelled by its
    ``mandate_ref`` with no ``psp_object_id``, is the request's own fault, and no key fixes
    it."""
    return (
        isinstance(exc, NotFoundError)
        and command.operation in ACTS_ON_OBJECT
        and bool(command.psp_object_id)
    )


def for_credentials(cause: BaseException | None) -> TypeGuard[ConnectorError]:
    """Whether a command parked for ``cause`` (what ``Shared.execute`` returned) waits for
    paybus's key: credentials refused, or a 404 :func:`another_account` kept (``execute``
    returns no other :class:`NotFoundError`). Its envelope is marked as parked for
    credentials, so a retry worker holding another key tries it at once, and
    ``paybus_parked_for_credentials`` and the credentials alert count it."""
    return isinstance(cause, AuthenticationError | NotFoundError)
