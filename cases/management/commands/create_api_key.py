from django.core.management.base import BaseCommand, CommandError

from cases.models import ApiClient
from cases.services import api_client_create


class Command(BaseCommand):
    help = "Create an API client and print its key once (the last word of the output)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="A name for the source system, e.g. core-collections")

    def handle(self, *args, name: str, **options):
        if ApiClient.objects.filter(name=name).exists():
            raise CommandError(f"An API client named {name!r} exists already; pick another name.")
        client, raw_key = api_client_create(name=name)
        self.stdout.write(
            f"Created API client {client.name!r}. Store this key now; it is not shown again:\n"
            f"{raw_key}"
        )
