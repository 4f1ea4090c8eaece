"""Units of work the CLI and the DAG tasks share: look a mailbox up, resolve its servers, run.

A DAG task and `mailshift copy` must do exactly the same thing, so both call these functions;
the only difference is where connection URIs come from (Airflow connections or environment).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailshift.copy.copier import CopyOptions, MailboxRef, PassSummary, copy_mailbox
from mailshift.errors import UnknownMailbox  # noqa: F401  (raised here; imported from here by callers)
from mailshift.protocols.endpoint import Endpoint, endpoint_from_env
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
    """Everything needed to copy one mailbox, from the inventory tables."""
    by_id = isinstance(address_or_id, int) or str(address_or_id).isdigit()
    where, key = ("m.id = %s", int(address_or_id)) if by_id else ("lower(m.address) = lower(%s)", address_or_id)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT m.id, m.address, m.source_login, m.dest_login, m.protocol, b.id, s.id,"
            " coalesce(s.airflow_conn_id, 'mailshift_' || replace(s.id, '-', '_')), b.spec"
            " FROM mailbox m JOIN household h ON h.id = m.household_id JOIN building b ON b.id = h.building_id"
            f" JOIN source_system s ON s.id = b.source_system WHERE {where}",
            (key,),
        )
        row = cur.fetchone()
    if row is None:
        raise UnknownMailbox(f"no mailbox {address_or_id!r} in the inventory")
    mid, address, slogin, dlogin, proto, building, system, conn_id, spec = row
    return MailboxContext(MailboxRef(mid, address, slogin, dlogin, proto), building, system, conn_id, spec or {})


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


def copy_one(conn, address_or_id: str | int, pass_kind: str,
             resolve: Callable[[str], Endpoint] = endpoint_from_env,
             dest_conn_id: str = DEFAULT_DEST_CONN, progress=None, **overrides) -> PassSummary:
    """One pass of one mailbox, servers resolved through `resolve(conn_id)`."""
    ctx = mailbox_context(conn, address_or_id)
    source = resolve(ctx.source_conn_id)
    dest = resolve(dest_conn_id)
    return copy_mailbox(CopyStore(conn), ctx.mailbox, source, dest, options_for(ctx, pass_kind, **overrides),
                        progress)
