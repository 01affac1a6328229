"""`python manage.py customer erase EXTERNAL_ID [--client NAME] [--by NAME] [--reference REF]`
carries out an erasure request; `customer ref EXTERNAL_ID [--client NAME]` prints the
reference an anonymised customer is known by (docs/privacy.md)."""

from __future__ import annotations

import getpass

from django.core.management.base import BaseCommand, CommandError

from cases.models import ApiClient
from privacy.services import ErasureRefused, customer_erase, customer_ref


class Command(BaseCommand):
    help = "Erasure requests for a customer's personal data. See docs/privacy.md."

    def add_arguments(self, parser):
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
        erase = subcommands.add_parser(
            "erase",
            help="Anonymise a customer everywhere outside the evidence the policy keeps.",
            description=(
                "Cancels the customer's open cases, then removes their name, contact "
                "details, address, documents and replies, keeping each case's timeline (the "
                "evidence) until the evidence period ends. Records who asked and when."
            ),
        )
        erase.add_argument("external_id", metavar="EXTERNAL_ID")
        erase.add_argument("--client", help="The source system (API client) the id belongs to.")
        erase.add_argument(
            "--by", default="", help="Who asked for it (default: the operating system user)."
        )
        erase.add_argument("--reference", default="", help="The request's ticket reference.")
        ref = subcommands.add_parser(
            "ref", help="Print the reference an anonymised customer is recorded under."
        )
        ref.add_argument("external_id", metavar="EXTERNAL_ID")
        ref.add_argument("--client", help="The source system (API client) the id belongs to.")

    def handle(self, *args, subcommand: str, **options):
        if subcommand == "ref":
            clients = ApiClient.objects.order_by("name")
            if options["client"]:
                clients = clients.filter(name=options["client"])
            for client in clients:
                ref = customer_ref(api_client_id=client.pk, external_id=options["external_id"])
                self.stdout.write(f"{client.name}: {ref}")
            return
        requested_by = options["by"] or f"{getpass.getuser()} (manage.py customer erase)"
        try:
            result = customer_erase(
                external_id=options["external_id"],
                client_name=options["client"],
                requested_by=requested_by,
                reference=options["reference"],
            )
        except ErasureRefused as exc:
            raise CommandError(str(exc)) from exc
        record = result.record
        if result.already_done:
            self.stdout.write(
                f"Already done on {record.created_at:%Y-%m-%d %H:%M} UTC "
                f"({record.get_action_display().lower()}); customer {record.customer_ref}."
            )
            return
        for case_id in result.cancelled:
            self.stdout.write(f"Cancelled open case {case_id} (reason: erasure_request).")
        details = record.details
        self.stdout.write(
            self.style.SUCCESS(
                f"Erased customer of {record.source}, now {record.customer_ref}: "
                f"{record.cases} case(s), {details.get('messages', 0)} message(s) masked, "
                f"{details.get('documents', 0)} document(s) deleted, "
                f"{details.get('replies', 0)} repl(ies) cleared. Each case keeps its timeline "
                "(the evidence) until the evidence period ends. Ledger entry "
                f"#{record.pk}, requested by {record.requested_by}."
            )
        )
