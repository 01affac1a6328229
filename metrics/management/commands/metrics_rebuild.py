from django.core.management.base import BaseCommand

from metrics.services import case_facts_rebuild


class Command(BaseCommand):
    help = "Recompute every case's metrics facts from its timeline."

    def handle(self, *args, **options):
        written = case_facts_rebuild()
        self.stdout.write(f"Rebuilt the facts of {written} cases.")
