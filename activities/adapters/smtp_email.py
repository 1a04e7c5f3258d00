"""Email over SMTP (stdlib smtplib, run in a worker thread): STARTTLS or implicit TLS, login.

Failure classes follow SMTP's reply codes: 5xx (recipient refused, message rejected, bad
credentials) is permanent; 4xx, dropped connections and timeouts are transient. SMTP has no
idempotency key: the Message-ID derived from the idempotency key lets a receiving system
spot duplicates, but a crash after the server accepted the message and before the outbox
recorded it sends it again on retry (the at-least-once window).
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from temporalio.exceptions import ApplicationError

from activities.errors import VENDOR_AUTH, VENDOR_REJECTED, VENDOR_UNAVAILABLE, invalid
from activities.outbox import Effect
from activities.ports import OutgoingMessage
from activities.settings import AdapterSettings


class SmtpNotifier:
    name = "smtp"
    in_app_database = False

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        user: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        implicit_tls: bool = False,
        timeout: float = 20.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._sender = sender
        self._user, self._password = user, password
        self._starttls, self._implicit_tls = starttls, implicit_tls
        self._timeout = timeout
        self._tls_context = tls_context or ssl.create_default_context()

    @classmethod
    def from_settings(cls, settings: AdapterSettings) -> SmtpNotifier:
        assert settings.smtp_host is not None
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            sender=settings.smtp_from,
            user=settings.smtp_user,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            starttls=settings.smtp_starttls,
            implicit_tls=settings.smtp_ssl,
            timeout=settings.smtp_timeout_seconds,
        )

    def _message(self, effect: Effect, message: OutgoingMessage) -> EmailMessage:
        if "@" not in message.recipient or any(c in message.recipient for c in "\r\n,;<>"):
            raise invalid("email recipient is not a single email address")
        email = EmailMessage()
        email["From"] = self._sender
        email["To"] = message.recipient
        email["Subject"] = " ".join((message.subject or message.template).split())
        email["Date"] = formatdate(localtime=False)
        digest = hashlib.sha256(effect.idempotency_key.encode()).hexdigest()[:32]
        email["Message-ID"] = f"<{digest}@opsflow>"
        email["Content-Language"] = message.language
        email.set_content(message.body)
        return email

    async def send(self, effect: Effect, message: OutgoingMessage) -> str:
        email = self._message(effect, message)
        await asyncio.to_thread(self._deliver, email)
        return str(email["Message-ID"])

    def _deliver(self, email: EmailMessage) -> None:
        try:
            client: smtplib.SMTP
            if self._implicit_tls:
                client = smtplib.SMTP_SSL(
                    self._host, self._port, timeout=self._timeout, context=self._tls_context
                )
            else:
                client = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
            with client:
                if self._starttls and not self._implicit_tls:
                    client.starttls(context=self._tls_context)
                if self._user:
                    client.login(self._user, self._password or "")
                client.send_message(email)
        except smtplib.SMTPAuthenticationError:
            raise ApplicationError(
                "smtp: login refused; check OPSFLOW_SMTP_USER/PASSWORD",
                type=VENDOR_AUTH,
                non_retryable=True,
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise ApplicationError(
                f"smtp: server does not support {exc}", type=VENDOR_REJECTED, non_retryable=True
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise _by_code("recipient refused", min(codes) if codes else 550) from None
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            raise _by_code(type(exc).__name__, exc.smtp_code) from None
        except smtplib.SMTPResponseException as exc:
            raise _by_code("server replied", exc.smtp_code) from None
        except (OSError, smtplib.SMTPException) as exc:  # connection refused/reset, timeout
            raise ApplicationError(
                f"smtp: could not deliver ({type(exc).__name__})", type=VENDOR_UNAVAILABLE
            ) from None


def _by_code(what: str, code: int) -> ApplicationError:
    if 500 <= code < 600:
        return ApplicationError(f"smtp: {what} ({code})", type=VENDOR_REJECTED, non_retryable=True)
    return ApplicationError(f"smtp: {what} ({code}), will retry", type=VENDOR_UNAVAILABLE)
