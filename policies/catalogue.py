"""The action catalogue: what a customer can be offered, the bounds each action takes, the
identity level it needs by default and the evidence it can capture. Workflows pick
actions from here; the mini-app renders them; the writeback maps them."""

from __future__ import annotations

from dataclasses import dataclass, field


class IdentityLevel:
    LINK = "link"
    OTP = "otp"
    OTP_AND_KNOWN_FACT = "otp_and_known_fact"
    CHOICES = [
        (LINK, "Link only"),
        (OTP, "One-time code"),
        (OTP_AND_KNOWN_FACT, "One-time code and a known fact"),
    ]
    ORDER = {LINK: 0, OTP: 1, OTP_AND_KNOWN_FACT: 2}


@dataclass(frozen=True)
class Param:
    """One bound of an action: a CEL expression giving `kind`."""

    name: str
    kind: type | object  # float, int, str, bool, list[int], list[str]
    help: str
    required: bool = True
    default: str | None = None


@dataclass(frozen=True)
class ActionSpec:
    key: str
    label: str
    identity_level: str
    params: tuple[Param, ...] = ()
    evidence: tuple[str, ...] = field(default_factory=tuple)


EVIDENCE_KINDS = {
    "consent_text": "The exact consent text shown, with time, IP and user agent",
    "amount": "The amount the customer chose",
    "date": "The date the customer chose",
    "plan": "The payment plan chosen (instalments, amount, dates)",
    "payment_reference": "The payment provider's reference and card last 4",
    "reason": "The reason the customer gave",
    "note": "The customer's free-text note",
    "documents": "The uploaded files with their SHA-256",
    "typed_name": "The full name the customer typed",
    "contact_details": "The contact details before and after",
    "callback_window": "The callback window chosen",
}

ACTIONS: dict[str, ActionSpec] = {
    spec.key: spec
    for spec in (
        ActionSpec(
            "pay_now",
            "Pay now",
            IdentityLevel.OTP,
            (
                Param("amount", float, "Amount due now"),
                Param("min_amount", float, "Least a part payment may be", False),
            ),
            ("amount", "payment_reference", "consent_text"),
        ),
        ActionSpec(
            "update_payment_method",
            "Update card",
            IdentityLevel.OTP,
            (),
            ("payment_reference", "consent_text"),
        ),
        ActionSpec(
            "promise_to_pay",
            "Promise to pay",
            IdentityLevel.OTP,
            (
                Param("max_days", int, "Latest promise date, in days from today"),
                Param("min_amount", float, "Least amount a promise may be"),
                Param("max_amount", float, "Most a promise may be (normally the balance)"),
            ),
            ("amount", "date", "consent_text"),
        ),
        ActionSpec(
            "payment_plan",
            "Payment plan",
            IdentityLevel.OTP_AND_KNOWN_FACT,
            (
                Param("total_amount", float, "Amount the plan repays"),
                Param("instalment_counts", list[int], "Monthly instalment counts offered"),
                Param("min_instalment", float, "Least amount of one instalment"),
                Param("max_term_months", int, "Longest plan, in months"),
            ),
            ("plan", "consent_text"),
        ),
        ActionSpec(
            "dispute",
            "Dispute",
            IdentityLevel.OTP,
            (Param("reasons", list[str], "Reasons a customer can choose"),),
            ("reason", "note"),
        ),
        ActionSpec(
            "upload_documents",
            "Upload documents",
            IdentityLevel.OTP_AND_KNOWN_FACT,
            (
                Param("document_types", list[str], "Document types accepted"),
                Param("max_files", int, "Most files in one submission", False, "5"),
                Param("max_file_mb", int, "Largest file, in MB", False, "10"),
            ),
            ("documents",),
        ),
        ActionSpec(
            "attestation",
            "Attestation",
            IdentityLevel.OTP,
            (Param("statement", str, "The statement the customer attests to"),),
            ("typed_name", "consent_text"),
        ),
        ActionSpec(
            "update_contact_details",
            "Update contact details",
            IdentityLevel.OTP,
            (
                Param(
                    "fields",
                    list[str],
                    "Which of phone, email, address may change",
                    False,
                    '["phone", "email", "address"]',
                ),
            ),
            ("contact_details",),
        ),
        ActionSpec(
            "request_callback",
            "Request a callback",
            IdentityLevel.LINK,
            (
                Param("windows", list[str], 'Callback windows, e.g. ["09:00-12:00"]'),
                Param("max_days", int, "Latest callback day, in days from today", False, "7"),
            ),
            ("callback_window",),
        ),
    )
}
ACTION_CHOICES = [(key, spec.label) for key, spec in ACTIONS.items()]

EXCEPTION_TYPES = [
    ("payment_declined", "Payment declined"),
    ("ineligible", "No eligible action"),
    ("identity_failed", "Identity check failed"),
    ("missing_document", "Missing document"),
    ("system_unavailable", "System of record unavailable"),
    ("no_response", "No response"),
    ("customer_requested_help", "Customer asked for help"),
]
