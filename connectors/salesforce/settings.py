"""Where paybus data lives in the org (object and field names) and how to reach the org.

Orgs name things their own way, so every object and field the connector touches is looked up
here instead of being spelt in the writer or the poller. The defaults match the demo org (and
the sandbox): ``Payment__c``, ``Mandate__c`` and ``Refund__c`` with the same custom fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from simple_salesforce.api import Salesforce

from streams.errors import ConfigurationError
from streams.settings import SalesforceSettings

#: The aggregate types of the bus, in the order the poller visits their objects.
AGGREGATE_TYPES = ("payment", "mandate", "refund")


@dataclass(frozen=True)
class ObjectMapping:
    """Field names of one sObject that holds one aggregate type."""

    object_name: str
    aggregate_type: str
    amount: str = "Amount__c"
    currency: str = "Currency__c"
    method: str = "Method__c"
    gateway: str = "Gateway__c"
    status: str = "Status__c"
    psp_id: str = "Psp_Id__c"
    bus_seq: str = "Bus_Seq__c"
    settlement_date: str = "Settlement_Date__c"
    external_id: str = "External_Id__c"
    failure_reason: str = "Failure_Reason__c"
    #: Lookup to the payment (refunds only).
    payment_lookup: str | None = None
    #: Tokens and routing facts staff (or a payment page) put on the record. Only tokens: a
    #: card or bank account number never belongs in the CRM. ``None`` leaves one out.
    customer_ref: str | None = "Customer_Ref__c"
    payment_method_ref: str | None = "Payment_Method_Ref__c"
    mandate_ref: str | None = "Mandate_Ref__c"
    country: str | None = "Country__c"
    charge_date: str | None = "Charge_Date__c"
    #: The link to the payment's page (``request_payment``; payments only). ``None`` leaves
    #: it out, for an org without the field.
    payment_page_url: str | None = None
    #: Field lengths of the demo org; longer values are cut rather than refused by Salesforce.
    failure_reason_length: int = 255
    psp_id_length: int = 80

    @property
    def writeback_fields(self) -> frozenset[str]:
        """Fields only the bus writes: a change to nothing else is the bus's own echo."""
        fields = {self.status, self.psp_id, self.bus_seq, self.settlement_date}
        fields |= {self.failure_reason, *([self.payment_page_url] if self.payment_page_url else [])}
        return frozenset(fields)

    @property
    def poll_fields(self) -> tuple[str, ...]:
        """Fields the poller reads to turn a record into a ``CrmChange``."""
        names = [
            "Id",
            "Name",
            "SystemModstamp",
            "LastModifiedById",
            self.external_id,
            self.status,
            self.amount,
            self.currency,
            self.method,
            self.gateway,
        ]
        if self.payment_lookup:
            names.append(self.payment_lookup)
        names += [name for name in self.optional_fields.values() if name]
        return tuple(names)

    @property
    def optional_fields(self) -> dict[str, str | None]:
        """CrmChange field -> sObject field for the optional intent details."""
        return {
            "customer_ref": self.customer_ref,
            "payment_method_ref": self.payment_method_ref,
            "mandate_ref": self.mandate_ref,
            "country": self.country,
            "charge_date": self.charge_date,
        }


#: The demo org's payment page link field (see deploy/salesforce).
PAYMENT_PAGE_FIELD = "Payment_Page_URL__c"


@dataclass(frozen=True)
class FieldMap:
    """The three objects of the bus, by aggregate type."""

    payment: ObjectMapping = field(
        default_factory=lambda: ObjectMapping(
            "Payment__c", "payment", payment_page_url=PAYMENT_PAGE_FIELD
        )
    )
    mandate: ObjectMapping = field(default_factory=lambda: ObjectMapping("Mandate__c", "mandate"))
    refund: ObjectMapping = field(
        default_factory=lambda: ObjectMapping("Refund__c", "refund", payment_lookup="Payment__c")
    )

    @classmethod
    def from_settings(cls, settings: SalesforceSettings) -> FieldMap:
        """Object names from the settings; field names are the defaults."""
        return cls(
            payment=ObjectMapping(
                settings.payment_object,
                "payment",
                payment_page_url=settings.payment_page_field or None,
            ),
            mandate=ObjectMapping(settings.mandate_object, "mandate"),
            refund=ObjectMapping(settings.refund_object, "refund", payment_lookup="Payment__c"),
        )

    def objects(self) -> tuple[ObjectMapping, ...]:
        """Payment, mandate and refund mappings, in that order."""
        return (self.payment, self.mandate, self.refund)

    def for_type(self, aggregate_type: str) -> ObjectMapping | None:
        """The mapping of an aggregate type, or None for a type the CRM does not hold."""
        return {m.aggregate_type: m for m in self.objects()}.get(aggregate_type)


def build_session(settings: SalesforceSettings) -> requests.Session:
    """A requests session; with a CA bundle it trusts exactly that bundle.

    ``trust_env`` is switched off in that case because requests lets ``REQUESTS_CA_BUNDLE`` (set
    on many machines) override a session's ``verify`` and would send loopback traffic through an
    ``HTTPS_PROXY``.
    """
    session = requests.Session()
    if settings.ca_bundle is not None:
        session.trust_env = False
        session.verify = str(settings.ca_bundle)
    return session


def build_salesforce(
    settings: SalesforceSettings, session: requests.Session | None = None
) -> Salesforce:
    """A simple-salesforce client from the settings: session id first, else user/password.

    With ``instance_url`` + ``session_id`` no login call is made (the embedded profile and
    OAuth-issued tokens). With ``username``/``password``/``security_token`` simple-salesforce
    logs in through SOAP; an ``instance_url`` on ``*.salesforce.com`` then names the login
    domain (My Domain), otherwise ``login`` is used.
    """
    session = session or build_session(settings)
    if settings.instance_url and settings.session_id is not None:
        return Salesforce(
            instance_url=settings.instance_url,
            session_id=settings.session_id.get_secret_value(),
            session=session,
            version=settings.api_version,
        )
    if settings.username and settings.password is not None:
        token = settings.security_token.get_secret_value() if settings.security_token else ""
        return Salesforce(
            username=settings.username,
            password=settings.password.get_secret_value(),
            security_token=token,
            domain=_login_domain(settings.instance_url),
            session=session,
            version=settings.api_version,
        )
    raise ConfigurationError(
        "Salesforce needs PAYBUS_SALESFORCE__INSTANCE_URL and PAYBUS_SALESFORCE__SESSION_ID, "
        "or PAYBUS_SALESFORCE__USERNAME, __PASSWORD and __SECURITY_TOKEN"
    )


def _login_domain(instance_url: str | None) -> str:
    host = urlsplit(instance_url).hostname if instance_url else None
    if host and host.endswith(".salesforce.com"):
        return host.removesuffix(".salesforce.com")
    return "login"
