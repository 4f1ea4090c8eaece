"""Units of work the CLI and the DAG tasks share: look a mailbox up, resolve its servers, run.

A DAG task and `mailshift copy` must do exactly the same thing, so both call these functions;
the only difference is where connection URIs come from (Airflow connections or environment).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mailshift.copy.copier import CopyOptions, MailboxRef, PassSummary, copy_mailbox
from mailshift.errors import (  # UnknownMailbox: callers import it from here
    AuthError,
    CredentialsError,
    IdentityMismatch,
    UnknownMailbox,
)
from mailshift.protocols.endpoint import Endpoint, endpoint_from_env
from mailshift.store import exception_records
from mailshift.store import inventory as inventory_store
from mailshift.store.ledger import CopyStore

DEFAULT_DEST_CONN = "mailshift_dest"


@dataclass(frozen=True)
class MailboxContext:
    """A mailbox with what its building's spec and source system say about copying it."""

    mailbox: MailboxRef
    building_id: str
    source_system: str
    source_conn_id: str
    spec: dict


def mailbox_context(conn, address_or_id: str | int) -> MailboxContext:
    """Everything needed to copy one mailbox, from the inventory tables; UnknownMailbox if none."""
    row = inventory_store.find_mailbox(conn, address_or_id)
    if row is None:
        raise UnknownMailbox(f"no mailbox {address_or_id!r} in the inventory")
    return MailboxContext(MailboxRef(row.id, row.address, row.source_login, row.dest_login, row.protocol),
                          row.building_id, row.source_system, row.source_conn_id, row.spec)


def options_for(ctx: MailboxContext, pass_kind: str, **overrides) -> CopyOptions:
    """Copy options from the building spec (UIDL strategy, folder map, destination lanes) plus
    explicit overrides (None values are ignored: the spec's value stands)."""
    options = {
        "pass_kind": pass_kind,
        "uidl_strategy": ctx.spec.get("uidl_strategy", "none"),
        "folder_map": ctx.spec.get("folder_map") or None,
    }
    if ctx.spec.get("dest_append_lanes"):
        options["append_lanes"] = int(ctx.spec["dest_append_lanes"])
    options.update({k: v for k, v in overrides.items() if v is not None})
    return CopyOptions(**options)


def preflight_key(mailbox_id: int) -> str:
    """Dedup key of a mailbox's preflight exception: the preflight raises it, a later good
    preflight or a finished copy pass resolves it."""
    return f"preflight:{mailbox_id}"


def copy_one(conn, address_or_id: str | int, pass_kind: str,
             resolve: Callable[[str], Endpoint] = endpoint_from_env,
             dest_conn_id: str = DEFAULT_DEST_CONN, progress=None, **overrides) -> PassSummary:
    """One pass of one mailbox, servers resolved through `resolve(conn_id)`."""
    ctx = mailbox_context(conn, address_or_id)
    source = resolve(ctx.source_conn_id)
    dest = resolve(dest_conn_id)
    summary = copy_mailbox(CopyStore(conn), ctx.mailbox, source, dest, options_for(ctx, pass_kind, **overrides),
                           progress)
    if not summary.refused and not summary.folders_refused:
        # a finished pass logged in on both sides and stored everything: what an earlier preflight
        # saw (unreachable, refused login, no room) no longer holds, so it must not block the gate
        exception_records.resolve_if_open(conn, preflight_key(ctx.mailbox.id), "copy",
                                          f"{pass_kind} pass finished: both servers reachable, nothing refused")
    return summary


@dataclass
class BatchResult:
    """One pass over a batch of mailboxes: totals over the mailboxes copied, every pass summary,
    and the login refusals (which retrying does not fix: the caller fails without retry)."""

    summaries: list[PassSummary] = field(default_factory=list)
    refused_logins: list[str] = field(default_factory=list)

    @property
    def totals(self) -> dict:
        return {"copied": sum(s.copied for s in self.summaries), "refused": sum(s.refused for s in self.summaries),
                "bytes": sum(s.bytes for s in self.summaries), "mailboxes": len(self.summaries)}


def copy_mailboxes(conn, mailbox_ids: list[int], pass_kind: str,
               resolve: Callable[[str], Endpoint] = endpoint_from_env,
               dest_conn_id: str = DEFAULT_DEST_CONN, progress=None) -> BatchResult:
    """One pass over several mailboxes. A refused login (or an unproven session identity, or a
    missing per-mailbox password) is noted and the others are still copied (one broken account must not hold up its batch); any other error propagates, so
    the caller retries the batch and the ledger skips what is already copied."""
    result = BatchResult()
    for mid in mailbox_ids:
        try:
            result.summaries.append(copy_one(conn, mid, pass_kind, resolve=resolve, dest_conn_id=dest_conn_id,
                                             progress=progress))
        except (AuthError, IdentityMismatch, CredentialsError) as exc:  # this mailbox only; no retry helps
            result.refused_logins.append(str(exc))
    return result
