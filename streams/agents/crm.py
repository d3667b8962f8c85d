"""The ``crm`` role: HTTP ingest always; Salesforce write-back and polling when configured.

* ``POST /events/crm`` (:mod:`streams.agents.crm_ingest`) takes signed changes from any CRM.
* With ``salesforce.instance_url`` set: the write-back agent
  (:mod:`streams.agents.crm_writer`) and, when ``crm.poll`` is on, the leader-only poller
  (:mod:`streams.agents.crm_source`).

Without Salesforce the role attaches only the ingest and says so in one log line, so
``paybus worker`` with every role still runs on the embedded default. The poller also needs
to know the integration user (``crm.integration_username``, else ``salesforce.username`` when
the bus logs in with a password): it is how the bus's own write-backs are told apart from
staff changes, and polling without it would feed every write-back straight back in.
"""

from __future__ import annotations

import logging
from typing import Any

from connectors.salesforce.budget import CallBudget
from streams.agents.crm_ingest import CrmIngest
from streams.app import PaybusApp

log = logging.getLogger(__name__)


def integration_username(app: PaybusApp) -> str | None:
    """The CRM user the bus writes as (the writer's credentials), if known."""
    settings = app.settings
    return settings.crm.integration_username or settings.salesforce.username


class CrmStage:
    """Attaches the CRM ingest, and the Salesforce writer and poller when configured."""

    def __init__(self, app: PaybusApp, *args: Any) -> None:
        from streams.agents.crm_source import CrmSourceStage
        from streams.agents.crm_writer import CrmWriterStage

        self.app = app
        self.ingest = CrmIngest(app)
        self.writer: CrmWriterStage | None = None
        self.source: CrmSourceStage | None = None
        settings = app.settings
        if settings.salesforce.instance_url is None:
            log.warning(
                "crm: Salesforce not configured (PAYBUS_SALESFORCE__INSTANCE_URL unset); "
                "write-back and polling off, POST /events/crm on"
            )
            return
        sf = settings.salesforce
        budget = CallBudget(sf.calls_per_minute) if sf.calls_per_minute else None
        self.writer = CrmWriterStage(app, budget)
        if not settings.crm.poll:
            return
        username = integration_username(app)
        if username is None:
            log.warning(
                "crm: Salesforce polling off: set PAYBUS_CRM__INTEGRATION_USERNAME (the user "
                "the bus writes as) so its own write-backs are not read back as changes"
            )
            return
        self.source = CrmSourceStage(app, username, budget)
