"""Email through Django's mail API, so EMAIL_BACKEND, EMAIL_HOST, EMAIL_PORT, EMAIL_USE_TLS,
EMAIL_TIMEOUT and the credentials apply as for any Django mail."""

from __future__ import annotations

import smtplib
from email.utils import formataddr, make_msgid
from typing import ClassVar

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from channels.providers.base import OutgoingMessage, Provider, ProviderError, SendResult


class SmtpEmailProvider(Provider):
    key: ClassVar[str] = "smtp"
    channel: ClassVar[str] = "email"
    # SMTP has no way to ask what was sent: an interrupted send is never repeated.
    can_reconcile: ClassVar[bool] = False
    settings_used: ClassVar[tuple[str, ...]] = ("DEFAULT_FROM_EMAIL", "BRAND_NAME")

    def __init__(self) -> None:
        self.from_email = formataddr((settings.BRAND_NAME, settings.DEFAULT_FROM_EMAIL))
        # Message-IDs on our own domain: providers that score reputation look at it.
        self.domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2] or "localhost"

    def send(self, message: OutgoingMessage) -> SendResult:
        message_id = make_msgid(domain=self.domain)
        headers = {"Message-ID": message_id, "X-Closeloop-Message": message.key}
        if message.unsubscribe_url:
            # RFC 8058 one-click unsubscribe, which Gmail and Yahoo require of bulk senders.
            headers["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        email = EmailMultiAlternatives(
            subject=message.subject,
            body=message.body,
            from_email=self.from_email,
            to=[message.to],
            headers=headers,
            connection=get_connection(fail_silently=False),
        )
        if message.html_body:
            email.attach_alternative(message.html_body, "text/html")
        try:
            email.send()
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise _refused("recipient refused", codes) from exc
        except smtplib.SMTPDataError as exc:
            raise _refused("message refused", [exc.smtp_code]) from exc
        except smtplib.SMTPResponseException as exc:
            # Our sender, login or the server's greeting: not the recipient's fault.
            raise ProviderError(
                f"SMTP {exc.smtp_code}: {type(exc).__name__}",
                permanent=False,
                code=str(exc.smtp_code),
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Refused connection, timeout (EMAIL_TIMEOUT), dropped connection.
            raise ProviderError(
                f"SMTP server unavailable: {type(exc).__name__}", permanent=False
            ) from exc
        return SendResult(provider_message_id=message_id)


def _refused(what: str, codes: list[int]) -> ProviderError:
    # The server's own text quotes the address; only the codes are kept.
    permanent = all(code >= 500 for code in codes)
    joined = ",".join(str(code) for code in codes)
    return ProviderError(f"SMTP {joined}: {what}", permanent=permanent, code=joined)
