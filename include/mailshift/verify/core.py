"""The verifier: re-read both servers, match, record reconciliation rows, findings and the proof.

`verify_mailbox` works on one mailbox; `verify_building` runs it for every mailbox of a building
in one verify run, then the Great Expectations suite over the run's mailbox rows, stores the
validation result and writes the HTML report. Plain Python, no Airflow.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from mailshift import settings
from mailshift.errors import ProtocolError
from mailshift.protocols.endpoint import Endpoint, endpoint_from_env
from mailshift.protocols.imap.append import classify_alteration
from mailshift.protocols.imap.folders import plan_folder
from mailshift.protocols.pop3 import map_uidls_to_uids, read_uidls
from mailshift.rules import states
from mailshift.rules import waivers as wv
from mailshift.rules.proof import proof_state
from mailshift.store import verification as vstore
from mailshift.store import waivers as waiver_store
from mailshift.verify.matching import (
    DEST_SIDE,
    SOURCE_SIDE,
    Finding,
    GroupResult,
    LedgerInfo,
    SourceItem,
    check_sample,
    match_group,
)
from mailshift.verify.recount import MODES, BodyReader, SideRead, fetch_digests, read_side, remove_declared

log = logging.getLogger(__name__)

DEFAULT_DEST_CONN = "mailshift_dest"
VERIFIER = "mailshift.verify/1"
PROOF_KINDS = (states.PRE_CUTOVER, states.FINAL)


@dataclass
class MailboxVerdict:
    mailbox_id: int
    address: str
    verify_run_id: int
    proof_id: int
    state: str                       # rules.proof state after this run: proven | waived | not_proven
    verdict: str                     # proof.verdict: proven | proven_with_waivers | failed
    mode: str
    src_count: int
    dest_count: int
    src_bytes: int
    dest_bytes: int
    matched: int
    waived: int
    blocking_open: int
    counts: dict
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    bytes_read: int = 0
    #: altered messages the building spec accepts, by class (non-blocking findings, never silent)
    accepted_alterations: dict = field(default_factory=dict)

    @property
    def reasons(self) -> list[str]:
        return [f.label() for f in self.findings if f.blocking and f.waiver_id is None]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["findings"] = [{k: (v.hex() if isinstance(v, bytes) else v) for k, v in asdict(f).items()}
                         for f in self.findings]
        d["reasons"] = self.reasons
        return d


@dataclass
class BuildingVerdict:
    building_id: str
    verify_run_id: int
    mailboxes: list[MailboxVerdict]
    errors: dict                     # address -> error text (mailboxes that could not be verified)
    gx_success: bool
    gx_result: dict
    report_path: str
    seconds: float

    @property
    def proven(self) -> bool:
        return self.gx_success and not self.errors and all(m.state in states.PROOF_OK for m in self.mailboxes)


# -- ledger reads -------------------------------------------------------------------------
def _ledger(conn, mailbox_id: int):
    folders, messages, as_of = vstore.read_ledger(conn, mailbox_id)
    by_folder: dict[int, dict[int, LedgerInfo]] = defaultdict(dict)
    for row in messages:
        r = LedgerInfo(*row)
        by_folder[r.folder_id][r.src_uid] = r
    return folders, by_folder, as_of


def _declared_removals(ledger_folders, ledger_rows) -> dict:
    """(source folder, UIDVALIDITY) -> {source UID: X-UIDL fields the copier declares removed}."""
    name_of = {fid: (name, uv) for fid, name, uv, _, _ in ledger_folders}
    out: dict[tuple, dict[int, list]] = defaultdict(dict)
    for fid, rows in ledger_rows.items():
        for uid, r in rows.items():
            if r.removed and fid in name_of:
                out[name_of[fid]][uid] = r.removed
    return dict(out)


def _verifier() -> str:
    return f"{VERIFIER} {socket.gethostname()}"


# -- POP3 ---------------------------------------------------------------------------------
def _uidl_findings(source: Endpoint, dest: Endpoint, ctx, src_read: SideRead, dst_read: SideRead,
                   inbox: GroupResult | None, inbox_fid: int | None) -> tuple[list[Finding], dict]:
    """Compare the legacy POP3 UIDL list with the destination's (UIDL and LIST only)."""
    mb = ctx.mailbox
    strategy = ctx.spec.get("uidl_strategy", "none")
    legacy = read_uidls(source, mb.source_login)
    new = read_uidls(dest, mb.dest_login)
    info = {"legacy": len(legacy), "dest": len(new), "strategy": strategy}
    if strategy != "x-uidl-header":
        differ = sorted({e.uidl for e in legacy} ^ {e.uidl for e in new})
        info["compared"] = False
        if not differ:
            return [], info
        return [Finding("uidl_mismatch", "INBOX", None, None, "INBOX", None, blocking=False,
                        detail=f"building spec uidl_strategy={strategy}: legacy UIDLs are not preserved by "
                               f"design ({len(differ)} differ); POP3 clients will download again")], info
    info["compared"] = True

    def uid_map(entries, read: SideRead):
        f = read.folders.get("INBOX")
        if f is None:
            return {}
        try:
            return {u: n for n, u in map_uidls_to_uids(entries, sorted((m.uid, m.size) for m in f.messages.values())).items()}
        except ProtocolError:
            return {}

    src_uid_of = uid_map(legacy, src_read)       # uidl -> source INBOX UID (sizes checked)
    dst_uid_of = uid_map(new, dst_read)
    kept = {f.dest_uid for f in (inbox.findings if inbox else []) if f.kind == "expunged_at_source"}
    want = Counter(e.uidl for e in legacy)
    have = Counter(e.uidl for e in new if e.uidl not in dst_uid_of or dst_uid_of[e.uidl] not in kept)
    out = []
    for uidl, n in sorted((want - have).items()):
        suid = src_uid_of.get(uidl)
        out.append(Finding("uidl_mismatch", "INBOX", inbox_fid if suid is not None else None, suid, "INBOX",
                           None, pop3_uidl=uidl, dest_uidvalidity=dst_read.folders["INBOX"].uidvalidity
                           if "INBOX" in dst_read.folders else None,
                           detail=f"legacy POP3 UIDL {uidl!r} is not in the destination's UIDL list"
                                  + (f" ({n}x)" if n > 1 else "")))
    for uidl, _n in sorted((have - want).items()):
        out.append(Finding("uidl_mismatch", None, None, None, "INBOX", dst_uid_of.get(uidl), pop3_uidl=uidl,
                           dest_uidvalidity=dst_read.folders["INBOX"].uidvalidity
                           if "INBOX" in dst_read.folders else None,
                           detail=f"destination POP3 UIDL {uidl!r} is not in the legacy UIDL list"))
    return out, info


# -- one mailbox --------------------------------------------------------------------------
def verify_mailbox(conn, address_or_id, resolve: Callable[[str], Endpoint] = endpoint_from_env,
                   mode: str = "full", *, dest_conn_id: str = DEFAULT_DEST_CONN, verify_run_id: int | None = None,
                   kind: str = "pre_cutover", sample_rate: float = 0.02, sample_min: int = 20,
                   seed: int | None = None) -> MailboxVerdict:
    """Re-read both servers for one mailbox and record reconciliation rows, findings and a proof row.

    Runs in its own verify run (scope 'mailbox') unless `verify_run_id` is given (a building run).
    Raises on connection/auth errors (the run is then marked failed if it is ours).
    """
    from mailshift.copy.copy_one import mailbox_context

    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    if kind not in PROOF_KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(PROOF_KINDS)}")
    ctx = mailbox_context(conn, address_or_id)
    mb = ctx.mailbox
    own_run = verify_run_id is None
    run_id = verify_run_id or vstore.open_run(conn, "mailbox", str(mb.id), kind, _verifier(), {"mode": mode})
    try:
        verdict = _verify(conn, ctx, resolve(ctx.source_conn_id), resolve(dest_conn_id), mode, run_id, kind,
                          sample_rate, sample_min, seed)
    except BaseException as exc:
        if own_run:
            vstore.finish_run(conn, run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    if own_run:
        vstore.finish_run(conn, run_id, "finished", {"state": verdict.state})
    return verdict


def _verify(conn, ctx, source: Endpoint, dest: Endpoint, mode: str, run_id: int, kind: str,
            sample_rate: float, sample_min: int, seed: int | None) -> MailboxVerdict:
    mb = ctx.mailbox
    started = time.monotonic()
    ledger_folders, ledger_rows, ledger_as_of = _ledger(conn, mb.id)
    declared = _declared_removals(ledger_folders, ledger_rows)
    with ThreadPoolExecutor(2, thread_name_prefix="verify") as pool:
        fs = pool.submit(read_side, source, mb.source_login, mode, declared=declared)
        fd = pool.submit(read_side, dest, mb.dest_login, mode)
        src, dst = fs.result(), fd.result()

    folder_id_of = {(name, uv): fid for fid, name, uv, _, _ in ledger_folders}
    groups, items, gone = _group_sources(ctx, src, dst, ledger_folders, ledger_rows)
    results = [match_group(dname, dst.folders.get(dname), items.get(dname, []), gone.get(dname, []),
                           groups[dname], full=(mode == "full"))
               for dname in sorted(groups)]
    if mode == "sample":
        rng = random.Random(seed if seed is not None else f"{mb.id}:{run_id}")
        _check_samples(results, source, dest, mb, rng, sample_rate, sample_min, declared)

    uidl_findings, uidl_info = [], {}
    if mb.protocol == "pop3":
        inbox = next((r for r in results if r.dest_folder == "INBOX"), None)
        inbox_fid = folder_id_of.get(("INBOX", src.folders["INBOX"].uidvalidity)) if "INBOX" in src.folders else None
        uidl_findings, uidl_info = _uidl_findings(source, dest, ctx, src, dst, inbox, inbox_fid)

    all_findings = [f for r in results for f in r.findings] + uidl_findings
    classify_alterations(all_findings, ledger_rows, source, dest, mb)
    accepted = wv.accept_alterations(all_findings, ctx.spec.get("accepted_alterations"), ctx.building_id)
    active = waiver_store.list_waivers(conn, [mb.id], include_revoked=False)
    waived = wv.apply_waivers(all_findings, active)
    seconds = time.monotonic() - started
    return _record(conn, ctx, run_id, kind, mode, results, uidl_findings, uidl_info, waived, ledger_as_of,
                   seconds, src.bytes_read + dst.bytes_read, accepted)


def _group_sources(ctx, src: SideRead, dst: SideRead, ledger_folders, ledger_rows):
    """Per destination folder: its source folders [(name, ledger folder id)], the source messages
    mapping to it, and the ledger rows copied earlier whose source message is gone now."""
    folder_id_of = {(name, uv): fid for fid, name, uv, _, _ in ledger_folders}
    ledger_dest_of = {fid: dname for fid, _, _, dname, _ in ledger_folders}
    folder_map = ctx.spec.get("folder_map") or None
    groups: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
    items: dict[str, list[SourceItem]] = defaultdict(list)
    seen: set[tuple[int, int]] = set()
    for name, sf in src.folders.items():
        plan = plan_folder(name, src.namespace, dst.namespace, src.listed_flags.get(name, ()), dst.special,
                           folder_map)
        fid = folder_id_of.get((name, sf.uidvalidity))
        groups[plan.dest_name].append((name, fid))
        rows = ledger_rows.get(fid, {}) if fid is not None else {}
        for uid, m in sf.messages.items():
            items[plan.dest_name].append(SourceItem(name, fid, m, rows.get(uid)))
            if fid is not None:
                seen.add((fid, uid))
    # ledger rows copied earlier whose source message is gone now: kept at the destination
    gone: dict[str, list[LedgerInfo]] = defaultdict(list)
    for fid, rows in ledger_rows.items():
        for uid, r in rows.items():
            if r.state in (states.COPIED, states.SOURCE_EXPUNGED) and (fid, uid) not in seen:
                gone[ledger_dest_of.get(fid) or ""].append(r)
    for dname in dst.folders:              # destination folders nothing maps to still count
        groups.setdefault(dname, [])
    return groups, items, gone


def classify_alterations(findings: list[Finding], ledger_rows, source: Endpoint, dest: Endpoint, mb,
                         chunk: int = 50) -> None:
    """Classify every altered message (a `digest_mismatch` pairing a source and a destination
    message) from the bytes both servers serve now, exactly as the copier classifies at copy
    time (`classify_alteration` of the bytes it had to store vs the bytes stored; a declared
    X-UIDL transformation applied first), and note the class the copier recorded. Only these
    messages are read again, `chunk` pairs at a time; the evidence joins the finding's detail."""
    todo = [f for f in findings if f.kind == "digest_mismatch" and f.src_folder is not None
            and f.src_uid is not None and f.dest_uid is not None]
    if not todo:
        return
    with BodyReader(source, mb.source_login) as src, BodyReader(dest, mb.dest_login) as dst:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            raw, stored = _bodies(src, part, "src_folder", "src_uid"), _bodies(dst, part, "dest_folder", "dest_uid")
            for f in part:
                led = ledger_rows.get(f.folder_id, {}).get(f.src_uid) if f.folder_id is not None else None
                f.copy_class = led.copy_class if led is not None and led.dest_uid == f.dest_uid else None
                body, got = raw.get((f.src_folder, f.src_uid)), stored.get((f.dest_folder, f.dest_uid))
                expected = _expected_bytes(body, led) if body is not None else None
                if expected is None or got is None:
                    continue
                f.alteration_class, evidence = classify_alteration(expected, got)
                f.detail += f"; class {f.alteration_class}: {evidence}"


def _bodies(reader: BodyReader, findings: list[Finding], folder_attr: str, uid_attr: str) -> dict:
    wanted: dict[str, list[int]] = defaultdict(list)
    for f in findings:
        wanted[getattr(f, folder_attr)].append(getattr(f, uid_attr))
    return {(folder, uid): body for folder, uids in wanted.items() for uid, body in reader.get(folder, uids).items()}


def _expected_bytes(raw: bytes, led: LedgerInfo | None) -> bytes | None:
    """The bytes the destination had to store for source bytes `raw`: the declared X-UIDL line
    in front of the source without exactly the fields the ledger declares removed."""
    if led is None or led.transform != states.Transform.X_UIDL or not led.pop3_uidl:
        return raw
    clean = remove_declared(raw, led.removed) if led.removed else raw
    return None if clean is None else states.x_uidl_header(led.pop3_uidl) + clean


def _check_samples(results: list[GroupResult], source: Endpoint, dest: Endpoint, mb, rng: random.Random,
                   sample_rate: float, sample_min: int, declared: dict | None = None) -> None:
    """Sample mode: fetch full bodies of a random sample of matched pairs on both sides and compare."""
    picks = {}
    for res in results:
        n = len(res.pairs)
        k = min(n, max(sample_min, int(round(n * sample_rate)))) if n else 0
        picks[res.dest_folder] = rng.sample(res.pairs, k) if k else []
    swant, dwant = defaultdict(list), defaultdict(list)
    for dname, pairs in picks.items():
        for item, d in pairs:
            swant[item.src_folder].append(item.msg.uid)
            dwant[dname].append(d.uid)
    with ThreadPoolExecutor(2, thread_name_prefix="verify-sample") as pool:
        fs = pool.submit(fetch_digests, source, mb.source_login, dict(swant), declared)
        fd = pool.submit(fetch_digests, dest, mb.dest_login, dict(dwant))
        sfull, dfull = fs.result(), fd.result()
    for res in results:
        pairs = picks.get(res.dest_folder, [])
        check_sample(res, {i.msg.uid: sfull[(i.src_folder, i.msg.uid)] for i, _ in pairs
                           if (i.src_folder, i.msg.uid) in sfull},
                     {d.uid: dfull[(res.dest_folder, d.uid)] for _, d in pairs
                      if (res.dest_folder, d.uid) in dfull}, pairs)


def _counts(findings: list[Finding]) -> dict:
    c = defaultdict(int)
    for f in findings:
        c[f.kind] += 1
        if f.blocking and f.waiver_id is None:
            c[f.kind + "_open"] += 1
            c["blocking_open"] += 1
        if f.waiver_id is not None:
            c["waived"] += 1
    return c


def _row_values(findings, src_count, dest_count, src_bytes, dest_bytes, expunged_kept, expunged_bytes,
                transform_bytes) -> dict:
    c = _counts(findings)
    w_src = [f for f in findings if f.waiver_id is not None and f.kind in SOURCE_SIDE]
    w_dst = [f for f in findings if f.waiver_id is not None and f.kind in DEST_SIDE]
    accepted = [f for f in findings if f.accepted]
    # an accepted alteration pairs one source with one destination message; its bytes differ
    accepted_bytes = sum((f.dest_size or 0) - (f.src_size or 0) for f in accepted)
    return dict(
        missing=c["missing_at_dest"], duplicated=c["duplicate_at_dest"], unexpected=c["unexpected_at_dest"],
        altered=c["digest_mismatch"], flags_mismatch=c["flags_mismatch"], date_mismatch=c["date_mismatch"],
        folders_missing=c["folder_missing"], uidl_mismatch=c["uidl_mismatch"], waived=c["waived"],
        missing_open=c["missing_at_dest_open"], duplicated_open=c["duplicate_at_dest_open"],
        altered_open=c["digest_mismatch_open"], unexpected_open=c["unexpected_at_dest_open"],
        flags_open=c["flags_mismatch_open"], dates_open=c["date_mismatch_open"],
        folders_open=c["folder_missing_open"], uidl_open=c["uidl_mismatch_open"],
        blocking_open=c["blocking_open"], accepted_altered=len(accepted), accepted_altered_bytes=accepted_bytes,
        src_count_net=src_count - len(w_src),
        dest_count_net=dest_count - expunged_kept - len(w_dst),
        src_bytes_net=src_bytes - sum(f.src_size or 0 for f in w_src),
        dest_bytes_net=(dest_bytes - transform_bytes - expunged_bytes - sum(f.dest_size or 0 for f in w_dst)
                        - accepted_bytes),
    )


#: figures of the folder rows summed into the mailbox-level row
_SUMMED = ("src_count", "dest_count", "src_bytes", "dest_bytes", "matched", "expunged_kept", "expunged_kept_bytes",
           "transform_bytes", "transformed", "sampled", "ledger_copied", "ledger_other", "ledger_expunged")


def _folder_rows(conn, mb, run_id: int, mode: str, results: list[GroupResult]) -> list[tuple[dict, list]]:
    """One reconciliation row (values, findings) per destination folder."""
    ledger_counts = vstore.ledger_counts(conn, mb.id)
    fdest = vstore.folders_by_dest(conn, mb.id)
    rows = []
    for res in results:
        lc = [ledger_counts.get(fid, (0, 0, 0)) for fid in fdest.get(res.dest_folder, [])]
        vals = _row_values(res.findings, res.src_count, res.dest_count, res.src_bytes, res.dest_bytes,
                           res.expunged_kept, res.expunged_kept_bytes, res.transform_bytes)
        vals.update(verify_run_id=run_id, mailbox_id=mb.id, folder_id=res.folder_id, level="folder",
                    dest_folder=res.dest_folder, src_folders=res.src_folders, mode=mode,
                    src_count=res.src_count, dest_count=res.dest_count, src_bytes=res.src_bytes,
                    dest_bytes=res.dest_bytes, expunged_kept=res.expunged_kept,
                    # an accepted alteration is a pair the building spec declares equal (counted apart)
                    matched=res.matched + vals["accepted_altered"],
                    expunged_kept_bytes=res.expunged_kept_bytes, transform_bytes=res.transform_bytes,
                    transformed=res.transformed, sampled=res.sampled,
                    ledger_copied=sum(x[0] for x in lc), ledger_other=sum(x[1] for x in lc),
                    ledger_expunged=sum(x[2] for x in lc), ok=vals["blocking_open"] == 0)
        rows.append((vals, res.findings))
    return rows


def _mailbox_row(mb, run_id: int, mode: str, folder_rows: list[tuple[dict, list]], findings: list[Finding],
                 seconds: float) -> dict:
    """The mailbox-level reconciliation row: the folder rows summed, counts over every finding."""
    totals = {k: sum(vals[k] for vals, _ in folder_rows) for k in _SUMMED}
    vals = _row_values(findings, totals["src_count"], totals["dest_count"], totals["src_bytes"],
                       totals["dest_bytes"], totals["expunged_kept"], totals["expunged_kept_bytes"],
                       totals["transform_bytes"])
    vals.update(totals)
    vals.update(verify_run_id=run_id, mailbox_id=mb.id, folder_id=None, level="mailbox", dest_folder=None,
                src_folders=None, mode=mode, seconds=seconds, ok=vals["blocking_open"] == 0)
    return vals


def _verdict(vals: dict) -> str:
    """The `proof.verdict` this run records (a fact of the run; the state is rules.proof's)."""
    if vals["blocking_open"]:
        return states.VERDICT_FAILED
    if vals["waived"]:
        return states.VERDICT_WITH_WAIVERS
    return states.VERDICT_PROVEN


def _record(conn, ctx, run_id, kind, mode, results, uidl_findings, uidl_info, waived, ledger_as_of, seconds,
            bytes_read, accepted: dict) -> MailboxVerdict:
    mb = ctx.mailbox
    rows = _folder_rows(conn, mb, run_id, mode, results)
    all_findings = [f for r in results for f in r.findings] + uidl_findings
    vals = _mailbox_row(mb, run_id, mode, rows, all_findings, seconds)
    rows.append((vals, uidl_findings))
    verdict = _verdict(vals)
    detail = {"mode": mode, "uidl": uidl_info, "bytes_read": bytes_read,
              "open": {k: v for k, v in vals.items() if k.endswith("_open") and v}}
    if accepted:   # the proof says what it accepted, and on whose word
        detail["accepted_alterations"] = accepted
        detail["accepted_by"] = f"building {ctx.building_id} spec accepted_alterations"
    _rec, proof_id = vstore.record_mailbox(conn, mb.id, rows, {
        "verify_run_id": run_id, "kind": kind, "verdict": verdict, "src_messages": vals["src_count"],
        "dest_messages": vals["dest_count"], "matched": vals["matched"], "waived": vals["waived"],
        "transformed": vals["transformed"], "ledger_as_of": ledger_as_of, "detail": detail})
    counts = {k: v for k, v in vals.items() if isinstance(v, int) and not isinstance(v, bool)}
    state = proof_state(conn, mb.id).state   # the one definition, now that the proof row is recorded
    return MailboxVerdict(mb.id, mb.address, run_id, proof_id, state, verdict, mode, vals["src_count"],
                          vals["dest_count"], vals["src_bytes"], vals["dest_bytes"], vals["matched"],
                          vals["waived"], vals["blocking_open"], counts, all_findings, round(seconds, 3),
                          bytes_read, accepted)


# -- one building -------------------------------------------------------------------------
def building_mailboxes(conn, building_id: str) -> list[tuple[int, str]]:
    """[(mailbox id, address)] of a building; UnknownMailbox when the building is not in the inventory."""
    mailboxes = vstore.building_mailboxes(conn, building_id)
    if mailboxes is None:
        from mailshift.copy.copy_one import UnknownMailbox

        raise UnknownMailbox(f"no building {building_id!r} in the inventory")
    return mailboxes


def open_building_run(conn, building_id: str, kind: str = "pre_cutover", mode: str = "full",
                      mailboxes: int | None = None) -> int:
    """Open the verify run of a building (its mailboxes may then be verified in several batches,
    in parallel: `verify_batch` with this run id; `close_building_run` ends it)."""
    if mailboxes is None:
        mailboxes = len(building_mailboxes(conn, building_id))
    return vstore.open_run(conn, "building", building_id, kind, _verifier(), {"mode": mode, "mailboxes": mailboxes})


def verify_batch(conn, verify_run_id: int, mailboxes: list[tuple[int, str]],
                 resolve: Callable[[str], Endpoint] = endpoint_from_env, mode: str = "full", *,
                 dest_conn_id: str = DEFAULT_DEST_CONN, kind: str = "pre_cutover",
                 sample_rate: float = 0.02) -> tuple[list[MailboxVerdict], dict[str, str]]:
    """Verify some mailboxes of a building run: (verdicts, {address: error}). A mailbox that
    cannot be verified is recorded as an error (the building's GX row count then fails)."""
    verdicts: list[MailboxVerdict] = []
    errors: dict[str, str] = {}
    for mid, address in mailboxes:
        try:
            verdicts.append(verify_mailbox(conn, mid, resolve, mode, dest_conn_id=dest_conn_id,
                                           verify_run_id=verify_run_id, kind=kind, sample_rate=sample_rate))
        except Exception as exc:   # recorded, and the GX row count then fails for the building
            log.exception("verify %s failed", address)
            errors[address] = f"{type(exc).__name__}: {exc}"
    return verdicts, errors


def close_building_run(conn, building_id: str, verify_run_id: int, verdicts: list[MailboxVerdict],
                       errors: dict[str, str], started: float, *, mailboxes: int,
                       reports: str | os.PathLike | None = None, dsn: str | None = None) -> BuildingVerdict:
    """The GX suite over the run's mailbox rows, the stored result, the HTML report; ends the run."""
    from mailshift.verify import gx_suites, report

    run_id = verify_run_id
    try:
        gx = gx_suites.run_building_suite(conn, run_id, mailboxes, dsn=dsn)
        out_dir = settings.reports_dir(reports) / building_id
        path = report.write_building_report(conn, building_id, run_id, gx, errors, out_dir)
        gx_suites.store_result(conn, run_id, gx, str(path))
    except BaseException as exc:
        vstore.finish_run(conn, run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    seconds = time.monotonic() - started
    bv = BuildingVerdict(building_id, run_id, verdicts, errors, gx.success, gx.result, str(path), seconds)
    vstore.finish_run(conn, run_id, "finished", {"gx_success": gx.success, "proven": bv.proven, "errors": errors,
                                                 "report": str(path), "seconds": round(seconds, 3)})
    return bv


def verify_building(conn, building_id: str, resolve: Callable[[str], Endpoint] = endpoint_from_env,
                    mode: str = "full", *, reports: str | os.PathLike | None = None,
                    dest_conn_id: str = DEFAULT_DEST_CONN, kind: str = "pre_cutover", dsn: str | None = None,
                    sample_rate: float = 0.02) -> BuildingVerdict:
    """Verify every mailbox of a building in one run, then the GX suite and the HTML report (in one
    process; the DAGs split the same run into mapped batches: open / verify_batch / close)."""
    started = time.monotonic()
    mailboxes = building_mailboxes(conn, building_id)
    run_id = open_building_run(conn, building_id, kind, mode, len(mailboxes))
    try:
        verdicts, errors = verify_batch(conn, run_id, mailboxes, resolve, mode, dest_conn_id=dest_conn_id,
                                        kind=kind, sample_rate=sample_rate)
    except BaseException as exc:
        vstore.finish_run(conn, run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    return close_building_run(conn, building_id, run_id, verdicts, errors, started, mailboxes=len(mailboxes),
                              reports=reports, dsn=dsn)
