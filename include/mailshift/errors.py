"""Exceptions of the IMAP layer, split by what the caller should do about them."""


class MailshiftImapError(Exception):
    """Base class for every error raised by mailshift.protocols.imap."""


class ConfigError(MailshiftImapError):
    """The connection description is wrong; retrying will not help."""


class AuthError(MailshiftImapError):
    """Login refused. Fail fast: retrying a wrong password only locks the account."""


class TransientError(MailshiftImapError):
    """Connection lost, timeout, server restarting: safe to retry (the ledger makes it idempotent)."""


class ProtocolError(MailshiftImapError):
    """The server answered something we cannot interpret; needs a person."""


class WaiverError(ValueError):
    """The waiver request is incomplete or names nothing that exists."""
