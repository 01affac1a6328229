"""One place that turns API errors into clear JSON answers: `{"detail", "errors"?}`."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"

    def __init__(self):
        super().__init__(
            f"The request body is larger than the limit of {settings.API_MAX_BODY_BYTES} bytes."
        )


def api_exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    if isinstance(exc, exceptions.ParseError):
        return Response(
            {
                "detail": f"The body is not valid JSON: {exc.detail}",
                "errors": {"body": [str(exc.detail)]},
            },
            status=status.HTTP_400_BAD_REQUEST,
        )
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.Throttled):
        # DRF has set Retry-After from the throttle's wait; the body says the same in words.
        client = getattr(context.get("request"), "auth", None)
        limit = (getattr(client, "rate_limit", "") or settings.API_RATE_LIMIT) if client else ""
        response.data = {
            "detail": f"Too many requests for this API key; try again in {exc.wait} seconds.",
            "errors": {
                "rate_limit": [f"This key may send {limit.replace('/', ' requests per ')}."]
            },
        }
    if response is not None and isinstance(exc, exceptions.ValidationError):
        response.data = {"detail": "The request is invalid.", "errors": response.data}
    return response
