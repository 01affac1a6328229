"""Single sign-on set-up from the command line (docs/sso.md):

python manage.py oidc discover https://login.example.com/realms/bank
    Reads the provider's discovery document and prints the OIDC_OP_* settings to set.
    mozilla-django-oidc takes explicit endpoints, so they are read once, by a person, and
    kept in the deployment's configuration rather than fetched at every start.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from config.http import HttpFailure, http_request

WELL_KNOWN = "/.well-known/openid-configuration"
# Setting name → the discovery document's field (OpenID Connect Discovery 1.0, section 3).
ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}


class Command(BaseCommand):
    help = "Print the OIDC_OP_* settings for an identity provider, from its discovery document."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="verb", required=True)
        discover = sub.add_parser("discover", help="Read the provider's discovery document.")
        discover.add_argument("issuer", help="The issuer URL, or the discovery document's URL.")

    def handle(self, *args, verb: str, issuer: str, **options):
        url = issuer.rstrip("/")
        if not url.endswith(WELL_KNOWN):
            url += WELL_KNOWN
        if not url.startswith(("https://", "http://")):
            raise CommandError(f"The issuer must be an http(s) URL, got {issuer!r}.")
        try:
            answer = http_request("GET", url, headers={"Accept": "application/json"})
        except HttpFailure as exc:
            raise CommandError(f"{url} did not answer: {exc}") from exc
        document = answer.json() if answer.status == 200 else None
        if not isinstance(document, dict):
            raise CommandError(f"{url} answered {answer.status}, not a discovery document.")
        missing = [field for field in ENDPOINTS.values() if not document.get(field)]
        if missing:
            raise CommandError(f"The discovery document has no {', '.join(missing)}.")
        for name, field in ENDPOINTS.items():
            self.stdout.write(f"{name}={document[field]}")
        algorithms = document.get("id_token_signing_alg_values_supported") or ["RS256"]
        # RS256 is the one every provider must offer (Discovery 1.0, section 3).
        algorithm = "RS256" if "RS256" in algorithms else algorithms[0]
        self.stdout.write(f"OIDC_RP_SIGN_ALGO={algorithm}")
        if "groups" in (document.get("scopes_supported") or []):
            self.stdout.write("OIDC_RP_SCOPES=openid email profile groups")
