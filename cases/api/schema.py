"""OpenAPI descriptions of the API's bodies, built from the same field lists the validators
use (cases/triggers.py), so the docs cannot drift from what is enforced."""

from __future__ import annotations

from cases.known_facts import KNOWN_FACT_KINDS
from cases.models import CaseOutcome, CaseState
from cases.triggers import ADDRESS_FIELDS, CHANNELS

_text = {"type": "string"}
_consent = {
    "oneOf": [
        {"type": "boolean"},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["value"],
            "properties": {
                "value": {"type": "boolean"},
                "timestamp": {"type": "string", "format": "date-time"},
                "source": _text,
            },
        },
    ]
}
_phone = {"type": "string", "pattern": r"^\+[1-9]\d{6,14}$", "example": "+447911123456"}

CUSTOMER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["external_id"],
    "properties": {
        "external_id": {**_text, "maxLength": 200},
        "name": {**_text, "maxLength": 200},
        "phone": _phone,
        "email": {"type": "string", "format": "email"},
        "whatsapp": _phone,
        "timezone": {**_text, "example": "Europe/London"},
        "locale": {**_text, "example": "en-GB"},
        "address": {
            "oneOf": [
                _text,
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        key: ({"type": "array", "items": _text} if key == "lines" else _text)
                        for key in ADDRESS_FIELDS
                    },
                },
            ]
        },
        "preferred_channel": {"type": "string", "enum": list(CHANNELS)},
        "flags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}},
        "consent": {
            "type": "object",
            "additionalProperties": False,
            "properties": {channel: _consent for channel in CHANNELS},
        },
        "known_facts": {
            "type": "object",
            "description": "Stored only as keyed, salted hashes for identity checks.",
            "additionalProperties": False,
            "properties": {kind: _text for kind in KNOWN_FACT_KINDS},
        },
    },
}

TRIGGER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["workflow", "event_id", "customer", "data"],
    "properties": {
        "workflow": {
            **_text,
            "description": "An active workflow's key",
            "example": "promise_to_pay",
        },
        "event_id": {
            **_text,
            "maxLength": 200,
            "description": "Your id for this event; the idempotency key",
        },
        "customer": CUSTOMER,
        "segment": {**_text, "maxLength": 64},
        "data": {
            "type": "object",
            "description": "The workflow's data contract (see GET /api/v1/workflows/).",
        },
    },
}
TRIGGER_REQUEST = {"application/json": TRIGGER}
BATCH_REQUEST = {
    "application/json": {
        "type": "object",
        "additionalProperties": False,
        "required": ["triggers"],
        "properties": {"triggers": {"type": "array", "items": TRIGGER, "maxItems": 1000}},
    }
}
CANCEL_REQUEST = {
    "application/json": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": {**_text, "maxLength": 500}},
    }
}

ERROR = {
    "type": "object",
    "properties": {
        "detail": _text,
        "errors": {
            "type": "object",
            "description": "Messages by field path, e.g. customer.phone or data.balance",
            "additionalProperties": {"type": "array", "items": _text},
        },
    },
}
CONFLICT = {
    "type": "object",
    "properties": {
        "detail": _text,
        "id": {"type": "string", "format": "uuid"},
        "differences": {"type": "array", "items": _text},
    },
}
CASE_SUMMARY = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "workflow": {
            "type": "object",
            "properties": {"key": _text, "version": {"type": "integer"}},
        },
        "event_id": _text,
        "state": {"type": "string", "enum": list(CaseState.values)},
        "outcome": {"type": "string", "enum": ["", *CaseOutcome.values]},
        "links": {"type": "object", "properties": {"self": _text, "cancel": _text}},
    },
}
CASE_DETAIL = {
    "type": "object",
    "properties": {
        **CASE_SUMMARY["properties"],
        "customer": {"type": "object", "properties": {"external_id": _text}},
        "segment": _text,
        "data": {"type": "object"},
        "offer": {"type": "object", "nullable": True},
        "milestones": {
            "type": "object",
            "additionalProperties": {"type": "string", "nullable": True},
        },
        "expires_at": {"type": "string", "format": "date-time"},
        "timeline": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "kind": _text,
                    "actor": _text,
                    "at": {"type": "string", "format": "date-time"},
                    "data": {"type": "object"},
                },
            },
        },
    },
}
BATCH_RESPONSE = {
    "type": "object",
    "properties": {
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "status": {
                        "type": "string",
                        "enum": ["created", "existing", "conflict", "invalid"],
                    },
                    "id": {"type": "string", "format": "uuid"},
                    "state": _text,
                    "url": _text,
                    "errors": ERROR["properties"]["errors"],
                    "differences": {"type": "array", "items": _text},
                },
            },
        },
    },
}
WORKFLOW_LIST = {
    "type": "object",
    "properties": {
        "workflows": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "key": _text,
                    "name": _text,
                    "version": {"type": "integer"},
                    "completion_definition": _text,
                    "data_schema": {"type": "object"},
                    "triggers_url": _text,
                },
            },
        }
    },
}
_hash = {"type": "string", "description": "SHA-256, hex; empty until sealed"}
_event = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "position": {"type": "integer", "nullable": True},
        "at": {"type": "string", "format": "date-time"},
        "kind": _text,
        "actor": _text,
        "data": {"type": "object"},
        "prev_hash": _hash,
        "hash": _hash,
    },
}
_events = {"type": "array", "items": _event}
EVIDENCE_BUNDLE = {
    "type": "object",
    "description": "A case's evidence (docs/evidence.md). `?format=html` gives the same as a "
    "print-friendly page.",
    "properties": {
        "format": {"type": "string", "example": "closeloop-evidence/1"},
        "generated_at": {"type": "string", "format": "date-time"},
        "case": {"type": "object"},
        "chain": {
            "type": "object",
            "properties": {
                "head_hash": _hash,
                "verified": {"type": "boolean"},
                "broken": {"type": "object", "nullable": True},
                "events_sealed": {"type": "integer"},
                "events_unsealed": {"type": "integer"},
                "algorithm": _text,
            },
        },
        "trigger": {"type": "object"},
        "offer": {"type": "object", "nullable": True},
        "messages": {"type": "array", "items": {"type": "object"}},
        "identity": _events,
        "choices": _events,
        "consent": _events,
        "contact_consent": _events,
        "submissions": {"type": "array", "items": {"type": "object"}},
        "timeline": _events,
    },
}
