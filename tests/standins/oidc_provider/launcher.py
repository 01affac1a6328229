"""Start the stand-in identity provider in its own process and act at it as a person
would: sign in on its login page and come back with the redirect to Closeloop's callback.

    provider = OidcProvider.start(db_path=..., redirect_uri="http://testserver/oidc/callback/")
    provider.person_put(username="ada", password="…", groups=["closeloop-agents"])
    callback = provider.sign_in(authorize_url, username="ada", password="…")
    provider.stop()
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parents[3]


class OidcProvider:
    def __init__(self, *, process: subprocess.Popen, url: str, control_token: str, **client):
        self.process, self.url, self.control_token = process, url, control_token
        self.client_id: str = client["client_id"]
        self.client_secret: str = client["client_secret"]

    @classmethod
    def start(
        cls, *, db_path: str | os.PathLike, redirect_uri: str, log_path: str | os.PathLike
    ) -> OidcProvider:
        client_id, client_secret = "closeloop-staff", secrets.token_urlsafe(24)
        control_token = secrets.token_urlsafe(24)
        command = [sys.executable, "-m", "tests.standins.oidc_provider", "--db", str(db_path)]
        command += ["--client-id", client_id, "--client-secret", client_secret]
        command += ["--redirect-uri", redirect_uri]
        env = {**os.environ, "OIDC_PROVIDER_CONTROL_TOKEN": control_token}
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True
            )
        first_line = process.stdout.readline()
        prefix = "oidc provider listening on "
        if not first_line.startswith(prefix):
            process.kill()
            process.wait()
            raise RuntimeError(
                f"The stand-in provider did not start: {Path(log_path).read_text()[-2000:]}"
            )
        return cls(
            process=process,
            url=first_line[len(prefix) :].strip(),
            control_token=control_token,
            client_id=client_id,
            client_secret=client_secret,
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()

    def closeloop_settings(self) -> dict[str, Any]:
        """Closeloop's OIDC_* settings for this provider, as an operator would set them."""
        return {
            "OIDC_RP_CLIENT_ID": self.client_id,
            "OIDC_RP_CLIENT_SECRET": self.client_secret,
            "OIDC_OP_AUTHORIZATION_ENDPOINT": f"{self.url}/o/authorize/",
            "OIDC_OP_TOKEN_ENDPOINT": f"{self.url}/o/token/",
            "OIDC_OP_USER_ENDPOINT": f"{self.url}/o/userinfo/",
            "OIDC_OP_JWKS_ENDPOINT": f"{self.url}/o/.well-known/jwks.json",
            "OIDC_RP_SIGN_ALGO": "RS256",
        }

    def person_put(self, *, username: str, password: str, groups: list[str], **claims) -> str:
        """Create or change a person at the provider; returns their `sub`."""
        answer = httpx.post(
            f"{self.url}/control/people/",
            json={"username": username, "password": password, "groups": groups, **claims},
            headers={"X-Control-Token": self.control_token},
            timeout=10,
        )
        answer.raise_for_status()
        return answer.json()["sub"]

    def sign_in(self, authorize_url: str, *, username: str, password: str) -> str:
        """Open the authorization URL, sign in on the provider's login form and return where
        the provider sends the browser next (Closeloop's callback, with code and state)."""
        with httpx.Client(timeout=10) as browser:
            answer = browser.get(authorize_url)
            if answer.status_code != 302:
                raise AssertionError(f"authorize: {answer.status_code} {answer.text[:500]}")
            login_url = urljoin(authorize_url, answer.headers["location"])
            browser.get(login_url).raise_for_status()
            answer = browser.post(
                login_url,
                data={
                    "username": username,
                    "password": password,
                    "next": parse_qs(urlsplit(login_url).query)["next"][0],
                    "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                },
            )
            if answer.status_code != 302:
                raise AssertionError(f"login: {answer.status_code} {answer.text[:500]}")
            # Back to the authorization endpoint, signed in now: consent is skipped for
            # this client, so it answers with the redirect to the client's callback.
            answer = browser.get(urljoin(login_url, answer.headers["location"]))
            if answer.status_code != 302:
                raise AssertionError(f"authorize again: {answer.status_code} {answer.text[:500]}")
            return answer.headers["location"]
