"""API-key authentication: `Authorization: Bearer <key>`."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from cases.models import ApiClient
from cases.services import api_client_authenticate


@dataclass(frozen=True)
class ApiClientPrincipal:
    """What `request.user` is for an API call: the client, not a staff user."""

    client: ApiClient
    is_authenticated: bool = True
    is_staff: bool = False

    def __str__(self) -> str:
        return f"api:{self.client.name}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        if scheme != self.keyword or not key.strip():
            raise exceptions.AuthenticationFailed(
                "Send the API key as 'Authorization: Bearer <key>'."
            )
        client = api_client_authenticate(key.strip())
        if client is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        now = timezone.now()
        # Written at most once a minute: a hot API must not turn every read into a write.
        if client.last_used_at is None or (now - client.last_used_at).total_seconds() > 60:
            ApiClient.objects.filter(pk=client.pk).update(last_used_at=now)
        return ApiClientPrincipal(client), client

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="closeloop"'


class IsApiClient(permissions.BasePermission):
    message = "An API key is required: send 'Authorization: Bearer <key>'."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ApiClient)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes the bearer API key in the OpenAPI schema."""

    target_class = "cases.api.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `python manage.py create_api_key NAME`.",
        }
