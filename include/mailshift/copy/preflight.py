"""Before copying a building: can we log in on both sides, and is there room at the destination?

Per mailbox, never fatal for the others: each problem is returned and recorded as an open
exception (resolved again once a later preflight finds the mailbox fine), so one broken account
does not hold up a whole building but does block its cutover until someone looks at it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mailshift.copy.copy_one import mailbox_context, preflight_key
from mailshift.errors import AuthError, ConfigError, IdentityMismatch, ProtocolError, TransientError
from mailshift.protocols.endpoint import Endpoint
from mailshift.protocols.imap.session import close_session, open_session, translated_errors
from mailshift.store import exception_records
from mailshift.store import inventory as inventory_store
from mailshift.store.ledger import declared_server


@dataclass
class PreflightResult:
    mailbox_id: int
    address: str
    problems: list = field(default_factory=list)
    dest_quota: tuple | None = None  # (used bytes, limit bytes)

    @property
    def ok(self) -> bool:
        return not self.problems


def _quota(client) -> tuple | None:
    if not client.has_capability("QUOTA"):
        return None
    _, quotas = client.get_quota_root("INBOX")
    for q in quotas:
        if q.resource.upper() == "STORAGE":
            return q.usage * 1024, q.limit * 1024
    return None


def check_mailbox(mailbox_id: int, address: str, source_login: str, dest_login: str,
                  source: Endpoint, dest: Endpoint, expected_bytes: int | None = None) -> PreflightResult:
    """Log in at the source and at the destination; read the destination quota."""
    result = PreflightResult(mailbox_id, address)
    for side, endpoint, login in (("source", source, source_login), ("destination", dest, dest_login)):
        client = None
        try:
            client = open_session(endpoint, login)
            with translated_errors(f"{side} {endpoint.label}"):
                client.select_folder("INBOX", readonly=True)
                if side == "destination":
                    result.dest_quota = _quota(client)
        except AuthError as exc:
            result.problems.append(("auth", f"{side} refused login: {exc}"))
        except (TransientError, ProtocolError, ConfigError) as exc:
            result.problems.append(("unreachable", f"{side}: {exc}"))
        finally:
            close_session(client)
    if result.dest_quota and expected_bytes is not None:
        used, limit = result.dest_quota
        if limit and used + expected_bytes > limit:
            result.problems.append(("quota", f"destination has {limit - used} bytes free, "
                                             f"mailbox needs about {expected_bytes}"))
    return result


def check_declared_server(system_id: str, declared: dict | None, endpoint: Endpoint) -> None:
    """The connection must point at the server systems.yaml names for that system: same host
    (case-insensitive), IMAP port (POP3 port for a POP3-only system), and TLS mode. Otherwise
    IdentityMismatch naming both, before any login (a wrong connection id or a stale export
    would otherwise migrate another server's mailboxes)."""
    if declared is None:
        raise IdentityMismatch(f"source system {system_id!r} is not in the inventory: load its systems.yaml")
    used_port = endpoint.port if endpoint.imap else endpoint.pop3_port
    want_port = declared["imap_port"] if endpoint.imap else declared["pop3_port"]
    diffs = []
    if (declared["imap_host"] or "").lower() != endpoint.host.lower():
        diffs.append(f"host {declared['imap_host']} != {endpoint.host}")
    if want_port is not None and want_port != used_port:
        diffs.append(f"port {want_port} != {used_port}")
    if declared["tls"] != endpoint.tls:
        diffs.append(f"tls {declared['tls']} != {endpoint.tls}")
    if diffs:
        named = f" {endpoint.conn_id}" if endpoint.conn_id else ""
        raise IdentityMismatch(f"source system {system_id!r}: systems.yaml and its connection{named} disagree "
                               f"({'; '.join(diffs)}): fix the connection or the export; nothing was read")


def _record(conn, building_id: str, result: PreflightResult) -> None:
    """One open exception per mailbox with problems (dedup key: a rerun updates it), resolved
    once the mailbox passes."""
    key = preflight_key(result.mailbox_id)
    if result.ok:
        exception_records.resolve_if_open(conn, key, "preflight", "logins and quota fine on a later preflight")
        return
    kinds = ", ".join(k for k, _ in result.problems)
    exception_records.raise_exception(conn, f"preflight_{result.problems[0][0]}", f"{result.address}: {kinds}",
                                      key, building_id=building_id, mailbox_id=result.mailbox_id,
                                      detail={"problems": [p for _, p in result.problems]})


def preflight_building(conn, building_id: str, resolve: Callable[[str], Endpoint],
                       dest_conn_id: str) -> list[PreflightResult]:
    """Check every mailbox of a building (servers through `resolve(conn_id)`), recording each
    problem as an exception; the results in mailbox id order."""
    dest = resolve(dest_conn_id)
    results = []
    checked: set[str] = set()
    for mid in inventory_store.building_mailbox_ids(conn, building_id):
        ctx = mailbox_context(conn, mid)
        mb = ctx.mailbox
        if ctx.source_system not in checked:  # before any login: the connection is the declared server
            check_declared_server(ctx.source_system, declared_server(conn, ctx.source_system),
                                  resolve(ctx.source_conn_id))
            checked.add(ctx.source_system)
        result = check_mailbox(mb.id, mb.address, mb.source_login, mb.dest_login, resolve(ctx.source_conn_id), dest)
        _record(conn, building_id, result)
        results.append(result)
    return results
