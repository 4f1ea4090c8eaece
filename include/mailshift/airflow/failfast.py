"""Which failures Airflow retries: the one rule of the Airflow glue.

A deliberate, non-transient failure (a wrong setting, a refused login, a missing or unsafe
per-mailbox password, a session that is not provably the intended mailbox, a folder collision
the building spec does not resolve, an unknown mailbox) comes back the same on every retry and
a refused login retried only locks the account, so the task fails at once
(`AirflowFailException`, no retry) with one line saying what to do. Transient failures
(connection refused, timeout, database down) and anything else keep Airflow's retries.

The classes are those whose CLI exit code says "fix the input, the setup, the credentials or
the identity" (`cli.errors`: 2, 3, 4, 7), so the CLI and the DAGs never disagree about
"run it again" (exit 5) versus "a person must act".

Use it as a decorator under `@task` (`@fail_fast()`) or around a call (`with fail_fast(): ...`).
"""

from __future__ import annotations

from contextlib import contextmanager

from airflow.sdk.exceptions import AirflowFailException

from mailshift.cli import errors as cli_errors
from mailshift.errors import MailshiftError

#: exit codes of failures that no retry fixes
NOT_RETRIED = frozenset({cli_errors.USAGE, cli_errors.CONFIG, cli_errors.AUTH, cli_errors.IDENTITY})


class NotRetried(AirflowFailException):
    """A deliberate failure: the task fails without retry. `cause_class` names the mailshift
    exception (the failure alert picks its next step by it); `code` is its CLI exit code."""

    def __init__(self, line: str, cause_class: str, code: int):
        super().__init__(line)
        self.cause_class, self.code = cause_class, code


def is_deliberate(exc: BaseException) -> bool:
    """True when retrying cannot help (see the module docstring)."""
    return isinstance(exc, MailshiftError) and cli_errors.exit_code(exc) in NOT_RETRIED


def failure_line(exc: BaseException | str, code: int | None = None) -> str:
    """One line: the error's own words plus what to do (the CLI's hint for its exit code)."""
    if code is None and isinstance(exc, BaseException):
        code = cli_errors.exit_code(exc)
    text = cli_errors.one_line(exc)
    hint = cli_errors.HINTS.get(code)
    if hint and hint not in text:
        text = f"{text}; {hint}"
    return text if "not retried" in text else f"{text} (not retried)"


def not_retried(line: str, cause_class: str = "MailshiftError", code: int = cli_errors.CONFIG) -> NotRetried:
    """The exception for a deliberate failure the caller detected itself (e.g. a batch whose
    logins were refused after the rest of the batch was copied)."""
    return NotRetried(failure_line(line, code), cause_class, code)


@contextmanager
def fail_fast():
    """Turn a deliberate mailshift failure into `NotRetried`; everything else passes unchanged."""
    try:
        yield
    except MailshiftError as exc:
        if not is_deliberate(exc):
            raise
        code = cli_errors.exit_code(exc)
        # from None: the task log shows the one line, not the traceback of a known condition
        raise NotRetried(failure_line(exc, code), type(exc).__name__, code) from None
