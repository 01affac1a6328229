"""Seed the demo: shipped workflows, a staff login, an API key and a few customers with
triggers, created through the same services the API uses. Safe to run again."""

from __future__ import annotations

import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from cases.models import ApiClient, Case
from cases.services import API_KEY_PREFIX, api_client_create, triggers_ingest
from channels.sequences import sequences_install_shipped
from miniapp.services import link_issue
from policies.services import cases_prepare, workflows_install_shipped

DEMO_ADMIN_USER = "admin"
# Demo-only credentials, refused outside DEBUG below; never used by a real deployment.
DEMO_ADMIN_PASSWORD = os.environ.get("DEMO_ADMIN_PASSWORD", "closeloop-demo")
DEMO_API_KEY = os.environ.get("DEMO_API_KEY", f"{API_KEY_PREFIX}demo-local-only-key")

DEMO_CUSTOMERS = [
    ("C-1001", "Ada Lovelace", "+447911123456", "ada@example.com", "Europe/London", "420.50", 22),
    (
        "C-1002",
        "Grace Hopper",
        "+12025550143",
        "grace@example.com",
        "America/New_York",
        "1250.00",
        45,
    ),
    ("C-1003", "Alan Turing", "+447911123457", "alan@example.com", "Europe/London", "89.99", 8),
    (
        "C-1004",
        "Katherine Johnson",
        "+13125550187",
        "kj@example.com",
        "America/Chicago",
        "3100.00",
        61,
    ),
    ("C-1005", "Hedy Lamarr", "+436641234567", "hedy@example.com", "Europe/Vienna", "640.00", 15),
]


def demo_triggers() -> list[dict]:
    return [
        {
            "workflow": "promise_to_pay",
            "event_id": f"demo-arrears-{external_id}",
            "customer": {
                "external_id": external_id,
                "name": name,
                "phone": phone,
                "email": email,
                "timezone": zone,
                "locale": "en-GB" if zone.startswith("Europe") else "en-US",
                "preferred_channel": "sms",
                "consent": {"sms": True, "email": True},
                "known_facts": {
                    "date_of_birth": "1985-12-10",
                    "postcode": "SW1A 1AA",
                    "account_last4": "4321",
                },
            },
            "segment": "retail",
            "data": {
                "account_reference": f"ACC-{external_id[2:]}",
                "balance": balance,
                "currency": "USD"
                if zone.startswith("America")
                else ("EUR" if "Vienna" in zone else "GBP"),
                "due_date": "2026-11-01",
                "days_past_due": days,
            },
        }
        for external_id, name, phone, email, zone, balance, days in DEMO_CUSTOMERS
    ] + [
        {
            "workflow": "promise_to_pay",
            "event_id": "demo-arrears-C-1006",
            "customer": {
                "external_id": "C-1006",
                "name": "Mary Jackson",
                "phone": "+447911123458",
                "timezone": "Europe/London",
                "flags": ["vulnerable"],
                "consent": {"sms": True},
            },
            "data": {
                "account_reference": "ACC-1006",
                "balance": "275.00",
                "currency": "GBP",
                "due_date": "2026-10-20",
                "days_past_due": 34,
            },
        },
        {
            "workflow": "failed_payment",
            "event_id": "demo-failed-C-1001",
            "customer": {"external_id": "C-1001"},
            "data": {
                "account_reference": "ACC-1001",
                "amount": "49.99",
                "currency": "GBP",
                "failed_at": "2026-11-20T06:00:00Z",
                "failure_reason": "card_expired",
            },
        },
        {
            "workflow": "compliance_refresh",
            "event_id": "demo-kyc-C-1002",
            "customer": {"external_id": "C-1002"},
            "data": {
                "account_reference": "ACC-1002",
                "refresh_due_date": "2027-01-31",
                "documents_required": ["proof_of_identity", "proof_of_address"],
            },
        },
        {
            "workflow": "address_update",
            "event_id": "demo-mail-C-1003",
            "customer": {"external_id": "C-1003"},
            "data": {
                "account_reference": "ACC-1003",
                "returned_at": "2026-11-18",
                "address_on_file": "1 Old Street, London EC1V 9HL",
            },
        },
    ]


class Command(BaseCommand):
    help = "Load the demo data: workflows, an admin login, an API key and sample triggers."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError(
                "seed_demo creates known demo credentials; run it only with DEBUG=1."
            )
        with transaction.atomic():
            workflows = workflows_install_shipped()
            sequences_install_shipped()
            user_model = get_user_model()
            if not user_model.objects.filter(username=DEMO_ADMIN_USER).exists():
                user_model.objects.create_superuser(
                    DEMO_ADMIN_USER, "admin@example.com", DEMO_ADMIN_PASSWORD
                )
            client = ApiClient.objects.filter(name="demo-source").first()
            if client is None:
                client, _ = api_client_create(name="demo-source", raw_key=DEMO_API_KEY)
            results = triggers_ingest(client=client, raw_triggers=demo_triggers())
            rejected = [r for r in results if r.status not in ("created", "existing")]
            if rejected:
                raise CommandError(f"Demo triggers were rejected: {rejected}")
            # Prepared here as well as by the worker's job, so the first page a newcomer
            # opens already shows offers and forks; preparing twice is a no-op.
            cases_prepare(case_ids=[r.case_id for r in results])
            cases = (
                Case.objects.filter(pk__in=[r.case_id for r in results])
                .select_related("customer", "workflow")
                .order_by("customer__external_id", "workflow__key")
            )
            links = [(case, link_issue(case=case)) for case in cases]
        self.stdout.write(f"Workflows: {', '.join(str(w) for w in workflows)}")
        self.stdout.write(
            f"Cases: {len(links)} demo cases ({sum(r.status == 'created' for r in results)} new)"
        )
        self.stdout.write("Mini-app links (what a customer's message would carry):")
        for case, issued in links:
            self.stdout.write(
                f"  {case.customer.name:<18} {case.workflow.key:<19} {case.state:<10} {issued.url}"
            )
