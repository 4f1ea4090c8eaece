"""Customer-notice campaigns, and the cutover gate's notice condition (`notice_gate_check`).

This module owns the campaign logic: who must be told what, by which channel, and when a
household counts as told. Rows are read and written by `mailshift.store.notices`; the mail goes
out through `mailshift.protocols.smtp`; the findings that make a household affected come from
the audit (`mailshift.customers.audit`).

Policy per building (`building.spec.notice_policy`, keys over DEFAULT_POLICY): `email_rounds`
email rounds to EVERY mailbox of the building; for every AFFECTED household a `letter` and a
`call` if the policy says so; `lead_days`: the first email round must have gone out at least
this many days before the swap.

A household is affected when one of its mailboxes has an open audit finding that changes
something for the customer (`audit_finding.affects_customer`), or when its address breaks the
dot-atom rules right now (checked live, so a skipped address audit cannot hide it).

Records live in the `notice` table (0001), campaign `migration` by default:
- email round n: `(household, mailbox, campaign, 'email_round_<n>', 'email')`, `sent` with the
  Message-ID in `external_ref` once the lab MTA / the ISP's relay accepted it;
- letter: `(household, NULL, campaign, 'letter', 'letter')`; call: `(..., 'call', 'call')`,
  `planned` when exported for the contact centre, then set from the recorded outcomes
  (`record_outcomes`; every outcome also lands in `notice_outcome`).
Satisfied: email rounds 1..N `sent|delivered|acknowledged` for every mailbox of the household,
letter `sent|delivered|acknowledged`, call `acknowledged` (the customer was reached).
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
from dataclasses import asdict, dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING

from mailshift import settings
from mailshift.customers.addresses import check_address, split_address
from mailshift.customers.audit import UIDL_DEPENDENT, require_scope
from mailshift.errors import RecordError  # raised here; the CLI catches notices.RecordError
from mailshift.protocols.smtp import SmtpRelay
from mailshift.store import audit as audit_store
from mailshift.store import notices as store

if TYPE_CHECKING:
    from mailshift.cutover.gate import Reason

CAMPAIGN = "migration"
OK_SENT = ("sent", "delivered", "acknowledged")

LETTER_OUTCOMES = {"sent": "sent", "delivered": "delivered", "returned": "bounced"}
CALL_OUTCOMES = {"reached": "acknowledged", "no_answer": "failed", "voicemail": "failed",
                 "wrong_number": "failed", "declined": "failed"}
EMAIL_OUTCOMES = {"delivered": "delivered", "bounced": "bounced", "acknowledged": "acknowledged"}
OUTCOMES = {"letter": LETTER_OUTCOMES, "call": CALL_OUTCOMES, "email": EMAIL_OUTCOMES}


@dataclass(frozen=True)
class NoticePolicy:
    """A building's notice policy; buildings override the defaults in `spec.notice_policy`."""

    email_rounds: int = 6
    letter: bool = True
    call: bool = True
    lead_days: int = 14

    @classmethod
    def from_spec(cls, spec: dict | None) -> NoticePolicy:
        p = (spec or {}).get("notice_policy") or {}
        d = asdict(cls())
        d.update({k: v for k, v in p.items() if k in d and v is not None})
        return cls(**d)


DEFAULT_POLICY = NoticePolicy()

# what changes for the customer, per finding kind (the email/letter template's sentences)
CHANGE_TEXT = {
    "address_": "Your e-mail address {address} does not meet the Internet standard the new "
                "service requires. It changes to {proposed}; mail to the old address is still "
                "delivered until {alias_until}.",
    "pop3_apop": "Your mail program signs in with APOP, which the new service does not accept. "
                 "Switch it to a normal password login with SSL/TLS before the move, or it "
                 "will stop receiving mail.",
    "pop3_last": "Your mail program uses the old POP3 LAST command, which the new service does "
                 "not offer; it may download all messages again. Please update it.",
    "pop3_leave_on_server": "Your mail program keeps mail on the server; after the move it may "
                            "show some messages twice once.",
    "rule_forward_lost": "Your forwarding rule ({target}) will stop unless it is set up again in "
                         "the new service.",
    "rule_copy_lost": "Your forwarding to {target} keeps a copy in your mailbox today; set the "
                      "new rule to keep a copy too.",
    "rule_autoreply_lost": "Your automatic reply will stop unless it is set up again in the new "
                           "service.",
    "rule_program_lost": "Your mail is passed to a program ({target}); the new service cannot do "
                         "this, and such notifications will stop arriving.",
    "rule_not_movable": "Your mail rule ({target}) could not be moved to the new service "
                        "automatically; please set it up again there.",
    "pop3_apop_unknown": "We could not tell from the old server's records whether your mail "
                         "program signs in with APOP, which the new service does not accept. "
                         "Please check that it uses a normal password login with SSL/TLS.",
    "pop3_last_unknown": "We could not tell from the old server's records whether your mail "
                         "program uses the old POP3 LAST command, which the new service does not "
                         "offer. Please check that your mail program is up to date.",
    "pop3_leave_on_server_unknown": "We could not tell whether your mail program keeps mail on "
                                    "the server. {uidl}",
}
UIDL_TEXT = {
    False: "The new service cannot keep the message numbers your mail program remembers: it "
           "will download every message still on the server once more after the move.",
    None: "We have not been able to confirm that the new service keeps the message numbers your "
          "mail program remembers: it may download messages still on the server once more.",
}


def change_text(kind: str, data: dict | None, alias_until=None) -> str:
    """The sentence telling the customer what a finding changes for them (unknown kinds still
    get one: a finding nobody wrote a sentence for must not go unmentioned)."""
    data = data or {}
    tmpl = CHANGE_TEXT.get(kind) or (CHANGE_TEXT["address_"] if kind.startswith("address_")
                                     else f"Change for your mailbox: {kind}.")
    rule = data.get("rule") or {}
    text = tmpl.format(address=data.get("address", ""),
                       proposed=data.get("new_address") or data.get("proposed", ""),
                       alias_until=alias_until or "the end of the transition period",
                       target=rule.get("target", "") or rule.get("origin", ""),
                       uidl=UIDL_TEXT.get(data.get("keeps_uidl"), ""))
    if kind == "pop3_leave_on_server" and data.get("keeps_uidl") is not True:
        text += " " + UIDL_TEXT[data.get("keeps_uidl")]
    return text


# -- who is affected ----------------------------------------------------------------------------
@dataclass
class Household:
    id: str
    building_id: str
    building_name: str
    domain: str
    contact_name: str
    phone: str
    postal_address: str
    policy: NoticePolicy
    mailboxes: dict  # mailbox id -> address
    changes: list    # (mailbox id, address, kind, sentence)
    destination: str = "mailshift_dest"

    @property
    def affected(self) -> bool:
        return bool(self.changes)


DEFAULT_DESTINATION = "mailshift_dest"


def destination_of(spec: dict | None) -> str:
    """The destination (connection id) a building moves to: `spec.destination` or the default."""
    return (spec or {}).get("destination") or DEFAULT_DESTINATION


def _keeps_uidl(conn, hhs: dict[str, Household]) -> dict[str, bool | None]:
    """building -> does its destination keep POP3 UIDLs (None: never probed)."""
    out, cache = {}, {}
    for hh in hhs.values():
        dest = hh.destination
        if dest not in cache:
            cap = audit_store.capability(conn, dest)
            cache[dest] = cap["keeps_uidl"] if cap else None
        out[hh.building_id] = cache[dest]
    return out


def _add_findings(conn, out: dict[str, Household], building, domain) -> set[int]:
    """The open findings that change something for each household; returns the mailboxes whose
    address change is stated. Unknowns waived by name are left out; leave-on-server (yes or
    unknown) counts only where the destination does not keep UIDLs or was never probed."""
    waived = audit_store.waivers(conn, building=building, domain=domain)
    keeps = _keeps_uidl(conn, out)
    addressed = set()   # mailboxes with an address change already stated (one sentence each)
    for hid, mid, address, kind, data, alias_until, bid, new_address in \
            audit_store.open_customer_findings(conn, building=building, domain=domain,
                                               also_kinds=tuple(UIDL_DEPENDENT)):
        hh = out.get(hid)
        if hh is None or (bid, mid, kind) in waived or (bid, None, kind) in waived:
            continue
        if kind in UIDL_DEPENDENT:
            if keeps.get(bid) is True:
                continue
            data = {**(data or {}), "keeps_uidl": keeps.get(bid)}
        if kind.startswith("address_"):
            if mid in addressed:
                continue
            addressed.add(mid)
            data = {**(data or {}), "new_address": new_address}
        hh.changes.append((mid, address, kind, change_text(kind, data, alias_until)))
    return addressed


def households(conn, *, building: str | None = None, domain: str | None = None
               ) -> dict[str, Household]:
    """Every household in scope with its mailboxes, policy and the changes that affect it;
    UnknownScope when the building or domain does not exist."""
    require_scope(conn, building=building, domain=domain)
    out: dict[str, Household] = {}
    for r in store.recipients(conn, building=building, domain=domain):
        hh = out.get(r.household_id)
        if hh is None:
            hh = out[r.household_id] = Household(
                r.household_id, r.building_id, r.building_name, r.domain, r.contact_name, r.phone,
                r.postal_address, NoticePolicy.from_spec(r.building_spec), {}, [],
                destination_of(r.building_spec))
        hh.mailboxes[r.mailbox_id] = r.address
    addressed = _add_findings(conn, out, building, domain)
    # live address check: an address that breaks the rules affects the household even when
    # no audit has stored it (or the stored finding was wrongly resolved)
    for hh in out.values():
        for mid, address in hh.mailboxes.items():
            probs = [] if mid in addressed else [k for k, _ in check_address(address)]
            if probs:
                hh.changes.append((mid, address, "address_" + probs[0],
                                   f"Your e-mail address {address} does not meet the Internet "
                                   f"standard the new service requires ({', '.join(probs)}); "
                                   "it will change."))
    return out


# -- email rounds -------------------------------------------------------------------------------
def kit_url(household_id: str) -> str | None:
    """The household's client-settings kit (`client_settings`), published under
    $MAILSHIFT_CLIENT_SETTINGS_URL/<household>/; None when that is not set."""
    base = settings.get(settings.CLIENT_SETTINGS_URL)
    return f"{base.rstrip('/')}/{household_id}/" if base else None


def render_email(hh: Household, mailbox_id: int, round_no: int, *, sender: str,
                 campaign: str, cutover: str | None = None,
                 settings_url: str | None = None) -> EmailMessage:
    """The notice mail of one round to one mailbox: every change of the household, or that
    nothing changes (every mailbox is told, affected or not)."""
    address = hh.mailboxes[mailbox_id]
    local, domain = split_address(address)
    msg = EmailMessage()
    msg["From"] = Address("Mail service migration", addr_spec=sender)
    msg["To"] = Address(display_name=hh.contact_name or "", username=local, domain=domain)
    msg["Subject"] = (f"Your mail service moves to a new provider (notice {round_no} of "
                      f"{hh.policy.email_rounds})")
    msg["Date"] = format_datetime(_dt.datetime.now(_dt.UTC))
    msg["Message-ID"] = make_msgid("notice", domain=sender.rsplit("@", 1)[-1])
    msg["X-Mailshift-Notice"] = f"{campaign}; round={round_no}; household={hh.id}"
    lines = [f"Dear {hh.contact_name or 'customer'},", "",
             f"the e-mail service of {hh.building_name} moves to a new provider"
             + (f" on {cutover}." if cutover else "."), ""]
    if hh.changes:
        lines.append("What changes for your household:")
        lines += [f"- {addr}: {text}" for _mid, addr, _kind, text in hh.changes]
    else:
        lines.append("Nothing changes for your household: your address, password and mail "
                     "program settings keep working.")
    if settings_url:
        lines += ["", "Settings for your mail program (Thunderbird, Outlook, Apple Mail / iPhone):",
                  settings_url]
    lines += ["", "Questions: call the support desk.", "",
              f"Household {hh.id}, notice {round_no} of {hh.policy.email_rounds}."]
    msg.set_content("\n".join(lines) + "\n")
    return msg


@dataclass
class SendResult:
    sent: list
    skipped_done: int
    not_required: int
    failed: list


def send_round(conn, round_no: int, *, building: str | None = None, domain: str | None = None,
               smtp_host: str, smtp_port: int, sender: str | None = None,
               campaign: str = CAMPAIGN, cutover: str | None = None,
               timeout: float = 30.0) -> SendResult:
    """Send email round `round_no` to every mailbox in scope whose building policy has that
    many rounds and which has not had it yet (idempotent). Each notice row is committed right
    after the relay accepted (or refused) the mail, so a crash re-sends at most the one in
    flight; an unreachable relay raises TransientError and a re-run resumes."""
    if round_no < 1:
        raise RecordError([f"round {round_no}: rounds start at 1"])
    hhs = households(conn, building=building, domain=domain)
    kind = f"email_round_{round_no}"
    done = store.mailboxes_with(conn, campaign=campaign, kind=kind, channel="email",
                                statuses=OK_SENT, household_ids=list(hhs))
    conn.commit()
    res = SendResult([], 0, 0, [])
    with SmtpRelay(smtp_host, smtp_port, timeout=timeout) as relay:
        for hh in hhs.values():
            if round_no > hh.policy.email_rounds:
                res.not_required += len(hh.mailboxes)
                continue
            for mid, address in hh.mailboxes.items():
                if mid in done:
                    res.skipped_done += 1
                    continue
                frm = sender or f"notices@{hh.domain}"
                msg = render_email(hh, mid, round_no, sender=frm, campaign=campaign,
                                   cutover=cutover, settings_url=kit_url(hh.id))
                err = relay.send(msg, sender=frm, recipient=address)
                with conn:
                    store.upsert(conn, hh.id, mid, campaign, kind, "email",
                                 "failed" if err else "sent",
                                 external_ref=None if err else msg["Message-ID"],
                                 detail={"address": address, **({"error": err} if err else {})})
                if err:
                    res.failed.append((hh.id, address, err))
                else:
                    res.sent.append((hh.id, address, msg["Message-ID"]))
    return res


# -- letters and calls --------------------------------------------------------------------------
EXPORT_COLUMNS = ("household_id", "building_id", "building_name", "contact_name", "phone",
                  "postal_address", "mailboxes", "changes", "status")


def export_list(conn, channel: str, *, building: str | None = None, domain: str | None = None,
                campaign: str = CAMPAIGN) -> list[dict]:
    """The contact centre's list: every affected household whose policy asks for a `letter`
    or a `call`. Creates `planned` notice rows (never downgrades recorded ones), so the gate
    sees what is still open."""
    if channel not in ("letter", "call"):
        raise ValueError("channel must be letter or call")
    hhs = households(conn, building=building, domain=domain)
    rows = []
    with conn:
        for hh in hhs.values():
            if not hh.affected or not getattr(hh.policy, channel):
                continue
            status = store.plan(conn, hh.id, campaign, channel, channel)
            rows.append({"household_id": hh.id, "building_id": hh.building_id,
                         "building_name": hh.building_name,
                         "contact_name": hh.contact_name, "phone": hh.phone,
                         "postal_address": hh.postal_address,
                         "mailboxes": " ".join(sorted(set(hh.mailboxes.values()))),
                         "changes": " | ".join(f"{a}: {t}" for _m, a, _k, t in hh.changes),
                         "status": status})
    return rows


def write_csv(rows: list[dict], out, columns=EXPORT_COLUMNS) -> None:
    w = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)


@dataclass(frozen=True)
class _Outcome:
    household_id: str
    mailbox_id: int | None
    kind: str
    channel: str
    outcome: str
    status: str
    at: _dt.datetime
    by: str
    note: str | None
    source: str


def _parse_outcome(conn, r: dict, where: str, recorded_by: str) -> _Outcome | str:
    """One CSV row checked against the inventory: the outcome, or the problem with it."""
    hid = (r.get("household_id") or "").strip()
    ch = (r.get("channel") or "").strip().lower()
    oc = (r.get("outcome") or "").strip().lower()
    if ch not in OUTCOMES:
        return f"{where}: channel {ch!r} is not letter, call or email"
    if oc not in OUTCOMES[ch]:
        return f"{where}: outcome {oc!r} for {ch}: use one of {', '.join(OUTCOMES[ch])}"
    if not store.household_exists(conn, hid):
        return f"{where}: unknown household {hid!r}"
    at_s = (r.get("at") or "").strip()
    try:
        at = _dt.datetime.fromisoformat(at_s) if at_s else _dt.datetime.now(_dt.UTC)
    except ValueError:
        return f"{where}: at {at_s!r} is not an ISO date/time"
    if at.tzinfo is None:
        at = at.replace(tzinfo=_dt.UTC)
    mid, kind = None, ch
    if ch == "email":
        rnd = (r.get("round") or "").strip()
        mid = store.household_mailbox(conn, hid, (r.get("address") or "").strip())
        if mid is None or not rnd.isdigit():
            return f"{where}: email outcomes need the household's address and the round"
        kind = f"email_round_{int(rnd)}"
    return _Outcome(hid, mid, kind, ch, oc, OUTCOMES[ch][oc], at,
                    (r.get("by") or "").strip() or recorded_by,
                    (r.get("note") or "").strip() or None, where)


def record_outcomes(conn, csv_text: str, *, recorded_by: str, source: str = "csv",
                    campaign: str = CAMPAIGN) -> dict:
    """Record outcomes from a CSV: `household_id,channel,outcome[,at][,by][,note][,address]
    [,round]`. channel letter|call|email; outcomes: letter sent|delivered|returned, call
    reached|no_answer|voicemail|wrong_number|declined, email delivered|bounced|acknowledged
    (with address and round). All rows are checked first; any problem: nothing is recorded
    (a half-recorded CSV could not be re-submitted safely)."""
    reader = csv.DictReader(io.StringIO(csv_text))
    need = {"household_id", "channel", "outcome"}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise RecordError([f"{source}: header must contain {sorted(need)}"])
    with conn:   # check every row, then write them all; raising rolls back
        parsed = [_parse_outcome(conn, r, f"{source}:{n}", recorded_by)
                  for n, r in enumerate(reader, 2)]
        problems = [p for p in parsed if isinstance(p, str)]
        if problems:
            raise RecordError(problems)
        for o in parsed:
            nid = store.upsert(conn, o.household_id, o.mailbox_id, campaign, o.kind, o.channel,
                               o.status, detail={"last_outcome": o.outcome}, at=o.at)
            store.add_outcome(conn, nid, o.outcome, o.status, o.at, recorded_by=o.by,
                              note=o.note, source=o.source)
    return {"recorded": len(parsed)}


# -- the gate -----------------------------------------------------------------------------------
def household_gaps(hh: Household, notes: list[store.NoticeRow], *, at: _dt.datetime) -> list[str]:
    """What is missing for one affected household, given its notice rows (empty: the policy
    is satisfied)."""
    p = hh.policy
    gaps = []
    first_sent = None
    for mid, address in hh.mailboxes.items():
        ok_rounds = set()
        for n in notes:
            if n.mailbox_id == mid and n.channel == "email" and n.kind.startswith("email_round_") \
                    and n.status in OK_SENT:
                ok_rounds.add(int(n.kind.rsplit("_", 1)[1]))
                if n.kind == "email_round_1" and n.sent_at is not None:
                    first_sent = n.sent_at if first_sent is None else min(first_sent, n.sent_at)
        missing = [n for n in range(1, p.email_rounds + 1) if n not in ok_rounds]
        if missing:
            gaps.append(f"email round(s) {','.join(map(str, missing))} of {p.email_rounds} "
                        f"not sent to {address}")
    for ch, want, ok in (("letter", p.letter, OK_SENT), ("call", p.call, ("acknowledged",))):
        if not want:
            continue
        row = next((n for n in notes if n.kind == ch and n.channel == ch and n.mailbox_id is None),
                   None)
        if row is None:
            gaps.append(f"no {ch} recorded")
        elif row.status not in ok:
            last = (row.detail or {}).get("last_outcome") or row.status
            gaps.append(f"{ch} not done (status {row.status}, last outcome {last})"
                        if ch == "letter" else f"call: customer not reached (last outcome {last})")
    if p.email_rounds and p.lead_days and first_sent is not None and \
            first_sent > at - _dt.timedelta(days=p.lead_days):
        gaps.append(f"first email round went out {first_sent:%Y-%m-%d}, less than "
                    f"{p.lead_days} days before {at:%Y-%m-%d}")
    return gaps


def notice_gate_check(conn, domain: str, *, at: _dt.datetime | None = None,
                      campaign: str = CAMPAIGN) -> list[Reason]:
    """The cutover gate's notice condition for `domain` (the gate's default, from the CLI and
    from Airflow alike): [] if every affected household on the domain has satisfied its
    building's notice policy, else one Reason per household naming it, its building, what
    changes for it and what is missing. Read-only."""
    # imported here: mailshift.cutover.gate imports this module for its default notice check
    from mailshift.cutover.gate import NOTICE, Reason

    at = at or _dt.datetime.now(_dt.UTC)
    with conn:   # read-only; leaves no transaction open on the gate's connection
        require_scope(conn, domain=domain)
        affected = [hh for hh in households(conn, domain=domain).values() if hh.affected]
        notes = store.of_households(conn, [hh.id for hh in affected], campaign)
    reasons = []
    for hh in affected:
        gaps = household_gaps(hh, notes.get(hh.id, []), at=at)
        if gaps:
            kinds = sorted({k for _m, _a, k, _t in hh.changes})
            reasons.append(Reason(NOTICE, hh.building_id, None,
                                  f"household {hh.id} ({hh.contact_name + '; ' if hh.contact_name else ''}"
                                  f"changes: {', '.join(kinds)}): " + "; ".join(gaps)))
    return reasons
