"""Every exception mailshift raises on purpose, in one place, each saying what the caller should do.

The CLI maps these to one line and an exit code (`mailshift.cli.errors`); nothing else is caught
broadly. Subclasses of MailshiftError are operational failures, never programming errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: errors.py imports nothing of mailshift at run time
    from mailshift.cutover.gate import GateVerdict
    from mailshift.inventory.exports import Issue


class MailshiftError(Exception):
    """Base class of every operational error of mailshift."""


class ConfigError(MailshiftError):
    """The connection description is wrong; retrying will not help."""


class AuthError(MailshiftError):
    """Login refused. Fail fast: retrying a wrong password only locks the account."""


class TransientError(MailshiftError):
    """Connection lost, timeout, server restarting: safe to retry (the ledger makes it idempotent)."""


class ProtocolError(MailshiftError):
    """The server answered something we cannot interpret; needs a person."""


class UnknownMailbox(LookupError, MailshiftError):
    """No mailbox with that address or id in the inventory."""


class WaiverError(ValueError, MailshiftError):
    """The waiver request is incomplete or names nothing that exists."""


# raised by mailshift.planning.snapshot
class SnapshotError(RuntimeError, MailshiftError):
    """Missing, malformed or inconsistent snapshot."""


# raised by mailshift.planning.planner
class PlanError(ValueError, MailshiftError):
    """The inputs cannot be planned; `problems` lists every reason (each names the building)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} planning problem(s), nothing planned:\n"
                         + "\n".join("  " + p for p in self.problems))


# raised by mailshift.customers.notices
class RecordError(ValueError, MailshiftError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems[:10]) + (f" (+{len(problems) - 10} more)"
                                                      if len(problems) > 10 else ""))
        self.problems = problems


# raised by mailshift.cutover.ttl
class TtlNotReady(RuntimeError, MailshiftError):
    """The TTL condition of the cutover does not hold (reasons listed)."""

    def __init__(self, domain: str, reasons: list[str]):
        self.domain, self.reasons = domain, reasons
        super().__init__(f"TTL check for {domain} refused: " + "; ".join(reasons))


# raised by mailshift.protocols.dns
class DnsError(RuntimeError, MailshiftError):
    """A DNS operation failed (network, refused, bad answer)."""


# raised by mailshift.protocols.dns
class PrerequisiteMismatch(DnsError):
    """The zone does not hold the expected old RRset; nothing was written."""

    def __init__(self, name: str, expected: list[str], found: list[str] | None, detail: str = ""):
        self.name, self.expected, self.found = name, expected, found
        super().__init__(
            f"MX of {name} is not the expected old RRset: expected {expected}, the server has "
            f"{found if found is not None else 'something else'}" + (f" ({detail})" if detail else "")
            + "; nothing was written")


# raised by mailshift.protocols.dns
class NotServed(DnsError):
    """Not every authoritative server serves the change before the timeout."""

    def __init__(self, message: str, answers: dict):
        self.answers = answers
        super().__init__(message)


# raised by mailshift.cutover.swap
class GateBlocked(RuntimeError, MailshiftError):
    def __init__(self, verdict: GateVerdict):
        self.verdict = verdict
        texts = verdict.reason_texts()
        super().__init__(f"the gate refuses the MX swap of {verdict.domain} ({len(texts)} reason(s)): "
                         + "; ".join(texts[:10]) + (" ..." if len(texts) > 10 else ""))


# raised by mailshift.cutover.swap
class SwapInconsistent(DnsError):
    """dns_change says the swap was applied but the zone serves something else: a person must look."""


# raised by mailshift.cutover.steps
class FinalProofFailed(RuntimeError, MailshiftError):
    def __init__(self, verdict: GateVerdict):
        self.verdict = verdict
        super().__init__(f"final proof of {verdict.domain} incomplete: " + "; ".join(verdict.reason_texts()[:10]))


# raised by mailshift.cutover.steps
class SwapAlreadyApplied(RuntimeError, MailshiftError):
    """Abort refused: the MX swap is applied; there is no rollback."""


# raised by mailshift.cutover.drain
class NotSwapped(RuntimeError, MailshiftError):
    """The drain runs only after the MX swap has been applied."""


# raised by mailshift.inventory.load
class InventoryError(MailshiftError):
    """Every problem found in the exports; nothing was written."""

    def __init__(self, issues: list[Issue]):
        self.issues = sorted(issues, key=lambda i: (i.file, i.line, i.field, i.problem))
        super().__init__(f"{len(self.issues)} inventory error(s), nothing loaded:\n"
                         + "\n".join(str(i) for i in self.issues))


# raised by mailshift.store.migrate
class MigrationError(RuntimeError, MailshiftError):
    """The database and the migration files disagree; nothing was applied."""


# raised by mailshift.store.migrate
class ChecksumMismatch(MigrationError):
    """An applied migration file was changed afterwards."""


# raised by mailshift.airflow.factory
class ShardOverBudget(RuntimeError, MailshiftError):
    """A shard took longer than its budget: re-plan with more shards (`mailshift plan --shards`)."""


# raised by mailshift.protocols.imap.session and mailshift.protocols.pop3 (issue #13)
class IdentityMismatch(MailshiftError):
    """The session is not provably the intended mailbox, or the server is not the one the inventory
    names (host/port/tls). Nothing of that mailbox was read or written; a person must look."""


# raised by mailshift.protocols.endpoint
class CredentialsError(ConfigError):
    """A per-mailbox credential is missing, or its file is unsafe (readable by others) or unreadable."""


# raised by mailshift.copy.copier before anything is written
class FolderCollision(MailshiftError):
    """Two source folders map to one destination name and the building spec does not say how to
    resolve it (`folder_map`); nothing was written for that mailbox."""


# raised by mailshift.customers (audit, notices, reports) and their CLI commands (issue #15)
class UnknownScope(UnknownMailbox):
    """A building, domain, wave, source system or mailbox named by the caller is not in the
    inventory (or an audit input does not exist): an error, never an empty success."""

