"""Staff roles from the command line:

python manage.py staff roles sync   # apply staff/roles.py to the groups again
python manage.py staff roles list   # each role and how many permissions it holds
"""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from staff.roles import ROLES
from staff.services import roles_sync


class Command(BaseCommand):
    help = "Staff roles: apply the definition in staff/roles.py to the groups, or list them."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="topic", required=True)
        roles = sub.add_parser("roles", help="The staff roles (Django groups).")
        roles.add_argument("verb", choices=["sync", "list"])

    def handle(self, *args, topic: str, verb: str, **options):
        if verb == "sync":
            try:
                counts = roles_sync()
            except LookupError as exc:
                raise CommandError(str(exc)) from exc
            for role, count in counts.items():
                self.stdout.write(f"{role}: {count} permissions")
            return
        groups = {g.name: g.permissions.count() for g in Group.objects.filter(name__in=ROLES)}
        for role in ROLES:
            held = groups.get(role)
            self.stdout.write(
                f"{role}: {held} permissions" if held is not None else f"{role}: missing (run sync)"
            )
