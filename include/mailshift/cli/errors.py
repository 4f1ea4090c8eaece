"""Exit codes of `mailshift` and the one line an operational failure prints, so scripts and
operators can tell "the answer is no" from "fix the input", "fix the setup" and "try again".

exit codes:
  0  ok
  1  the check ran and said no (verify not proven, a gate refused, messages refused, no match)
  2  bad input or usage (arguments, inventory exports, waiver, plan, unknown mailbox/building)
  3  configuration error (no or wrong database URL, connection variable, SMTP relay, schema)
  4  authentication refused (not retried: a wrong password only locks the account)
  5  server or database unreachable, or a transient failure (safe to run again)
  6  protocol error (a server answered something mailshift cannot interpret)
  7  identity mismatch (a server or mailbox is not the one the inventory names)

Every mailshift.errors.MailshiftError becomes `mailshift: error: <message>` on stderr (one
line, never a traceback). Last resorts, same shape: psycopg2.OperationalError (a database that
fails mid-command: 5), a database without the schema (3: run `mailshift db upgrade`), an input
file that cannot be read (2). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import psycopg2
import psycopg2.errors

from mailshift import errors as E

OK, NO, USAGE, CONFIG, AUTH, UNREACHABLE, PROTOCOL, IDENTITY = range(8)

#: (code, meaning): the table above, also the epilog of `mailshift --help`
CODES = (
    (OK, "ok"),
    (NO, "the check ran and said no (verify not proven, a gate refused, messages refused, no match)"),
    (USAGE, "bad input or usage (arguments, inventory exports, waiver, plan, unknown mailbox/building)"),
    (CONFIG, "configuration error (no or wrong database URL, connection variable, SMTP relay, schema)"),
    (AUTH, "authentication refused (not retried: a wrong password only locks the account)"),
    (UNREACHABLE, "server or database unreachable, or a transient failure (safe to run again)"),
    (PROTOCOL, "protocol error (a server answered something mailshift cannot interpret)"),
    (IDENTITY, "identity mismatch (a server or mailbox is not the one the inventory names)"),
)
EPILOG = "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in CODES)

#: the most specific class in an exception's MRO decides (PrerequisiteMismatch before DnsError)
EXIT_CODES: dict[type[BaseException], int] = {
    E.ConfigError: CONFIG,
    E.MigrationError: CONFIG,          # database and migration files disagree: a deployment problem
    E.AuthError: AUTH,
    E.TransientError: UNREACHABLE,
    E.DnsError: UNREACHABLE,           # network, refused, bad answer: run again
    E.NotServed: UNREACHABLE,
    E.ProtocolError: PROTOCOL,
    E.SwapInconsistent: PROTOCOL,      # the zone serves something else than recorded: a person looks
    E.UnknownMailbox: USAGE,
    E.WaiverError: USAGE,
    E.SnapshotError: USAGE,
    E.PlanError: USAGE,
    E.RecordError: USAGE,
    E.InventoryError: USAGE,
    E.GateBlocked: NO,
    E.TtlNotReady: NO,
    E.FinalProofFailed: NO,
    E.SwapAlreadyApplied: NO,
    E.NotSwapped: NO,
    E.PrerequisiteMismatch: NO,        # the zone is not as expected; nothing was written
    E.ShardOverBudget: NO,
    E.IdentityMismatch: IDENTITY,      # not provably the intended mailbox/server: nothing was read
    E.CredentialsError: CONFIG,        # per-mailbox password missing or its file unsafe
    E.FolderCollision: USAGE,          # two folders map to one name: the building spec must say how
}

#: appended to the message: what to do, where the exception's own words do not say it
HINTS = {
    AUTH: "not retried: fix the credentials of that connection",
    UNREACHABLE: "check that it is up and reachable, then run the command again (safe to retry)",
    PROTOCOL: "a person must look at that server (its logs, its answer above)",
    IDENTITY: "not retried: a person must check that server's login setup or the inventory",
}


def exit_code(exc: BaseException) -> int:
    """The exit code of an exception: its most specific mapped class; NO for an unmapped one."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return NO


def one_line(exc: BaseException | str) -> str:
    """An exception's text on one line: a multi-line list becomes `summary: a; b; c`."""
    lines = [part.strip() for part in str(exc).splitlines() if part.strip()]
    if not lines:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    if len(lines) == 1:
        return lines[0]
    return lines[0] + " " + "; ".join(lines[1:])


def say(code: int, message: str) -> int:
    """Print `mailshift: error: <message>` (plus the hint of `code`) and return `code`."""
    text = one_line(message)
    hint = HINTS.get(code)
    if hint and hint not in text:
        text = f"{text}; {hint}"
    print(f"mailshift: error: {text}", file=sys.stderr)
    return code


def usage(message: str) -> int:
    """A command's own check of its arguments failed: one line, exit 2."""
    return say(USAGE, message)


def report(exc: BaseException) -> int:
    """Print the one line of a MailshiftError and return its exit code."""
    return say(exit_code(exc), one_line(exc))


def _where(dsn: str | None) -> str:
    from mailshift.store import db

    try:
        return db.describe(db.resolve_dsn(dsn))
    except E.MailshiftError:
        return "(no database configured)"


def run(func, args) -> int:
    """Run a command; every operational failure becomes one line and its exit code."""
    try:
        return func(args)
    except E.MailshiftError as exc:
        return report(exc)
    except psycopg2.errors.UndefinedTable as exc:
        return say(CONFIG, f"database {_where(getattr(args, 'db', None))} lacks mailshift tables "
                           f"({exc.diag.message_primary or one_line(exc)}): run `mailshift db upgrade`")
    except psycopg2.OperationalError as exc:
        return say(UNREACHABLE, f"database {_where(getattr(args, 'db', None))} failed: {one_line(exc)}")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        return usage(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
