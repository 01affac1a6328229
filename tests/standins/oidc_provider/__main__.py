"""python -m tests.standins.oidc_provider --db PATH --client-id ID --client-secret SECRET
--redirect-uri URI [--port N]: migrate a fresh SQLite database, register the client (consent
skipped, ID tokens signed RS256 with a key made now), print the address, serve."""

from __future__ import annotations

import argparse
import os
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--db", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--redirect-uri", required=True)
    args = parser.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    os.environ["OIDC_PROVIDER_RSA_KEY"] = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    os.environ["OIDC_PROVIDER_DB"] = args.db
    os.environ["OIDC_PROVIDER_SECRET_KEY"] = secrets.token_urlsafe(32)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.standins.oidc_provider.settings"

    import django

    django.setup()

    from django.core.management import call_command
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application
    from oauth2_provider.models import Application

    call_command("migrate", verbosity=0)
    Application.objects.create(
        name="Closeloop staff",
        client_id=args.client_id,
        client_secret=args.client_secret,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=args.redirect_uri,
        skip_authorization=True,
        algorithm=Application.RS256_ALGORITHM,
    )
    server = ThreadedWSGIServer(("127.0.0.1", args.port), WSGIRequestHandler)
    server.set_app(get_wsgi_application())
    print(f"oidc provider listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
