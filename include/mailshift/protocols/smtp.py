"""SMTP submission to the ISP's relay (the lab MTA in tests), for the customer notices.

`SmtpRelay` opens one connection on the first message, reuses it for the rest and closes it
politely. Two kinds of failure, kept apart because the caller treats them differently:
- the relay cannot be reached or drops the connection: TransientError naming host:port (retry
  later; the campaign records each accepted mail, so a re-run sends only what is missing);
- the relay refuses one recipient or one message: `send` returns the refusal text, so the
  caller records that one notice as failed and goes on with the others.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from mailshift import settings
from mailshift.errors import ConfigError, TransientError


def parse_target(value: str) -> tuple[str, int]:
    """`host:port` -> (host, port); ConfigError on anything else."""
    host, _, port = (value or "").strip().rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"SMTP relay {value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def relay_target(explicit: str | None = None) -> tuple[str, int]:
    """The relay: `explicit` HOST:PORT or $MAILSHIFT_SMTP; ConfigError naming both if neither."""
    value = explicit or settings.get(settings.SMTP)
    if not value:
        raise ConfigError(f"no SMTP relay: pass --smtp HOST:PORT or set {settings.SMTP}")
    return parse_target(value)


class SmtpRelay:
    """One SMTP connection to a relay, opened lazily; use as a context manager."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0, smtp_factory=smtplib.SMTP):
        self.host, self.port, self.timeout = host, int(port), timeout
        self._factory = smtp_factory
        self._smtp: smtplib.SMTP | None = None

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    def _connect(self) -> smtplib.SMTP:
        if self._smtp is None:
            try:
                self._smtp = self._factory(self.host, self.port, timeout=self.timeout)
            except (OSError, smtplib.SMTPException) as exc:
                raise TransientError(f"SMTP relay {self.label} unreachable: {exc}") from exc
        return self._smtp

    def send(self, msg: EmailMessage, *, sender: str, recipient: str) -> str | None:
        """Submit `msg` for `recipient`: None once the relay accepted it, else the relay's
        refusal ("550 ...") for this message. Raises TransientError if the connection fails."""
        smtp = self._connect()
        try:
            smtp.send_message(msg, from_addr=sender, to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients.get(recipient, (None, str(exc)))
            return f"{code} {_text(text)}" if code else _text(text)
        except smtplib.SMTPServerDisconnected as exc:
            self._smtp = None
            raise TransientError(f"SMTP relay {self.label} closed the connection: {exc}") from exc
        except smtplib.SMTPResponseException as exc:
            return f"{exc.smtp_code} {_text(exc.smtp_error)}"
        except OSError as exc:
            self._smtp = None
            raise TransientError(f"SMTP relay {self.label}: {exc}") from exc
        return None

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def __enter__(self) -> SmtpRelay:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
