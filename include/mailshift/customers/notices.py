"""Customer-notice campaigns and the cutover gate's notice condition.

Policy per building (`building.spec.notice_policy`, keys over DEFAULT_POLICY): `email_rounds`
email rounds to EVERY mailbox of the building; for every AFFECTED household a `letter` and a
`call` if the policy says so; `lead_days`: the first email round must have gone out at least
this many days before the swap.

A household is affected when one of its mailboxes has an open audit finding that changes
something for the customer (`audit_finding.affects_customer`), or when its address breaks the
dot-atom rules right now (checked live by the gate, so a skipped address audit cannot hide it).

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
import smtplib
from dataclasses import asdict, dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from psycopg2.extras import Json

from mailshift.customers.addresses import check_address, split_address
from mailshift.errors import RecordError  # noqa: F401  (raised here)

CAMPAIGN = "migration"
OK_SENT = ("sent", "delivered", "acknowledged")

LETTER_OUTCOMES = {"sent": "sent", "delivered": "delivered", "returned": "bounced"}
CALL_OUTCOMES = {"reached": "acknowledged", "no_answer": "failed", "voicemail": "failed",
                 "wrong_number": "failed", "declined": "failed"}
EMAIL_OUTCOMES = {"delivered": "delivered", "bounced": "bounced", "acknowledged": "acknowledged"}
OUTCOMES = {"letter": LETTER_OUTCOMES, "call": CALL_OUTCOMES, "email": EMAIL_OUTCOMES}


@dataclass(frozen=True)
class NoticePolicy:
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
}


def change_text(kind: str, data: dict | None, alias_until=None) -> str:
    data = data or {}
    tmpl = CHANGE_TEXT.get(kind) or (CHANGE_TEXT["address_"] if kind.startswith("address_")
                                     else f"Change for your mailbox: {kind}.")
    rule = data.get("rule") or {}
    return tmpl.format(address=data.get("address", ""), proposed=data.get("proposed", ""),
                       alias_until=alias_until or "the end of the transition period",
                       target=rule.get("target", ""))


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

    @property
    def affected(self) -> bool:
        return bool(self.changes)


def _scope(building: str | None, domain: str | None) -> tuple[str, list]:
    if building:
        return "b.id = %s", [building]
    if domain:
        return "b.domain = %s", [domain]
    raise ValueError("a building or a domain is required")


def households(conn, *, building: str | None = None, domain: str | None = None
               ) -> dict[str, Household]:
    """Every household in scope with its mailboxes, policy and the changes that affect it."""
    where, params = _scope(building, domain)
    out: dict[str, Household] = {}
    with conn.cursor() as cur:
        cur.execute(f"""SELECT h.id, b.id, coalesce(b.name, b.id), b.domain,
                               coalesce(h.contact_name, ''), coalesce(h.phone, ''),
                               coalesce(h.postal_address, ''), b.spec, m.id, m.address
                        FROM household h JOIN building b ON b.id = h.building_id
                        JOIN mailbox m ON m.household_id = h.id
                        WHERE {where} ORDER BY h.id, m.id""", params)
        for hid, bid, bname, dom, cn, ph, pa, spec, mid, address in cur.fetchall():
            hh = out.get(hid)
            if hh is None:
                hh = out[hid] = Household(hid, bid, bname, dom, cn, ph, pa,
                                          NoticePolicy.from_spec(spec), {}, [])
            hh.mailboxes[mid] = address
        cur.execute(f"""SELECT f.household_id, f.mailbox_id, m.address, f.kind, f.data,
                               r.alias_until
                        FROM audit_finding f JOIN building b ON b.id = f.building_id
                        JOIN mailbox m ON m.id = f.mailbox_id
                        LEFT JOIN address_rename r ON r.mailbox_id = f.mailbox_id
                             AND r.status <> 'cancelled'
                        WHERE f.status = 'open' AND f.affects_customer AND {where}
                        ORDER BY f.household_id, f.mailbox_id, f.kind, f.id""", params)
        seen = set()
        for hid, mid, address, kind, data, alias_until in cur.fetchall():
            hh = out.get(hid)
            if hh is None:
                continue
            text = change_text(kind, data, alias_until)
            if kind.startswith("address_"):
                if (mid, "address") in seen:
                    continue
                seen.add((mid, "address"))
            hh.changes.append((mid, address, kind, text))
    # live address check: an address that breaks the rules affects the household even when
    # no audit has stored it (or the stored finding was wrongly resolved)
    for hh in out.values():
        for mid, address in hh.mailboxes.items():
            if (mid, "address") in seen:
                continue
            probs = [k for k, _ in check_address(address)]
            if probs:
                hh.changes.append((mid, address, "address_" + probs[0],
                                   f"Your e-mail address {address} does not meet the Internet "
                                   f"standard the new service requires ({', '.join(probs)}); "
                                   "it will change."))
    return out


# -- email rounds -------------------------------------------------------------------------------
def render_email(hh: Household, mailbox_id: int, round_no: int, *, sender: str,
                 campaign: str, cutover: str | None = None) -> EmailMessage:
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
    mine = [c for c in hh.changes]
    if mine:
        lines.append("What changes for your household:")
        for _mid, addr, _kind, text in mine:
            lines.append(f"- {addr}: {text}")
    else:
        lines.append("Nothing changes for your household: your address, password and mail "
                     "program settings keep working.")
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
    after the MTA accepted the mail (a crash re-sends at most the one in flight)."""
    if round_no < 1:
        raise ValueError("rounds start at 1")
    hhs = households(conn, building=building, domain=domain)
    kind = f"email_round_{round_no}"
    with conn.cursor() as cur:
        cur.execute("SELECT mailbox_id FROM notice WHERE campaign = %s AND kind = %s AND "
                    "channel = 'email' AND status = ANY(%s) AND household_id = ANY(%s)",
                    (campaign, kind, list(OK_SENT), list(hhs)))
        done = {r[0] for r in cur.fetchall()}
    conn.commit()
    res = SendResult([], 0, 0, [])
    smtp = None
    try:
        for hh in hhs.values():
            if round_no > hh.policy.email_rounds:
                res.not_required += len(hh.mailboxes)
                continue
            for mid, address in hh.mailboxes.items():
                if mid in done:
                    res.skipped_done += 1
                    continue
                if smtp is None:
                    smtp = smtplib.SMTP(smtp_host, smtp_port, timeout=timeout)
                frm = sender or f"notices@{hh.domain}"
                msg = render_email(hh, mid, round_no, sender=frm, campaign=campaign,
                                   cutover=cutover)
                status, detail, err = "sent", {"address": address}, None
                try:
                    smtp.send_message(msg, from_addr=frm, to_addrs=[address])
                except smtplib.SMTPRecipientsRefused as exc:
                    status, err = "failed", str(exc.recipients.get(address, exc))
                except smtplib.SMTPResponseException as exc:
                    status, err = "failed", f"{exc.smtp_code} {exc.smtp_error!r}"
                if err:
                    detail["error"] = err
                _upsert_notice(conn, hh.id, mid, campaign, kind, "email", status,
                               msg["Message-ID"] if status == "sent" else None, detail)
                conn.commit()
                (res.sent if status == "sent" else res.failed).append(
                    (hh.id, address, msg["Message-ID"] if status == "sent" else err))
    finally:
        if smtp is not None:
            try:
                smtp.quit()
            except smtplib.SMTPException:
                pass
    return res


def _upsert_notice(conn, household_id, mailbox_id, campaign, kind, channel, status,
                   external_ref=None, detail=None, at=None):
    at = at or _dt.datetime.now(_dt.UTC)
    sent_at = at if status in ("sent", "delivered", "acknowledged", "bounced") else None
    with conn.cursor() as cur:
        cur.execute("""
            INSERT INTO notice (household_id, mailbox_id, campaign, kind, channel, status,
                                sent_at, delivered_at, acknowledged_at, external_ref, detail)
            VALUES (%(h)s, %(m)s, %(c)s, %(k)s, %(ch)s, %(s)s, %(sent)s,
                    CASE WHEN %(s)s = 'delivered' THEN %(at)s END,
                    CASE WHEN %(s)s = 'acknowledged' THEN %(at)s END, %(ref)s, %(d)s)
            ON CONFLICT (household_id, mailbox_id, campaign, kind, channel) DO UPDATE SET
                status = EXCLUDED.status,
                sent_at = coalesce(notice.sent_at, EXCLUDED.sent_at),
                delivered_at = CASE WHEN EXCLUDED.status = 'delivered'
                                    THEN coalesce(notice.delivered_at, EXCLUDED.delivered_at)
                                    ELSE notice.delivered_at END,
                acknowledged_at = CASE WHEN EXCLUDED.status = 'acknowledged'
                                       THEN EXCLUDED.acknowledged_at
                                       ELSE notice.acknowledged_at END,
                external_ref = coalesce(EXCLUDED.external_ref, notice.external_ref),
                detail = coalesce(notice.detail, '{}'::jsonb) || coalesce(EXCLUDED.detail,
                                                                          '{}'::jsonb)
            RETURNING id""",
                    {"h": household_id, "m": mailbox_id, "c": campaign, "k": kind, "ch": channel,
                     "s": status, "sent": sent_at, "at": at, "ref": external_ref,
                     "d": Json(detail) if detail is not None else None})
        return cur.fetchone()[0]


# -- letters and calls --------------------------------------------------------------------------
EXPORT_COLUMNS = ("household_id", "building_id", "building_name", "contact_name", "phone",
                  "postal_address", "mailboxes", "changes", "status")


def export_list(conn, channel: str, *, building: str | None = None, domain: str | None = None,
                campaign: str = CAMPAIGN) -> list[dict]:
    """The contact centre's list: every affected household whose policy asks for a `letter`
    or a `call`. Creates `planned` notice rows (never downgrades recorded ones)."""
    if channel not in ("letter", "call"):
        raise ValueError("channel must be letter or call")
    hhs = households(conn, building=building, domain=domain)
    rows = []
    with conn:
        with conn.cursor() as cur:
            for hh in hhs.values():
                if not hh.affected or not getattr(hh.policy, channel):
                    continue
                cur.execute("""INSERT INTO notice (household_id, mailbox_id, campaign, kind,
                                   channel, status) VALUES (%s, NULL, %s, %s, %s, 'planned')
                               ON CONFLICT (household_id, mailbox_id, campaign, kind, channel)
                               DO NOTHING""", (hh.id, campaign, channel, channel))
                cur.execute("""SELECT status FROM notice WHERE household_id = %s AND
                               mailbox_id IS NULL AND campaign = %s AND kind = %s AND
                               channel = %s""", (hh.id, campaign, channel, channel))
                status = cur.fetchone()[0]
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


def record_outcomes(conn, csv_text: str, *, recorded_by: str, source: str = "csv",
                    campaign: str = CAMPAIGN) -> dict:
    """Record outcomes from a CSV: `household_id,channel,outcome[,at][,by][,note][,address]
    [,round]`. channel letter|call|email; outcomes: letter sent|delivered|returned, call
    reached|no_answer|voicemail|wrong_number|declined, email delivered|bounced|acknowledged
    (with address and round). All rows are checked first; any problem: nothing is recorded."""
    reader = csv.DictReader(io.StringIO(csv_text))
    need = {"household_id", "channel", "outcome"}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise RecordError([f"{source}: header must contain {sorted(need)}"])
    rows, problems = [], []
    with conn.cursor() as cur:
        for n, r in enumerate(reader, 2):
            where = f"{source}:{n}"
            hid = (r.get("household_id") or "").strip()
            ch = (r.get("channel") or "").strip().lower()
            oc = (r.get("outcome") or "").strip().lower()
            if ch not in OUTCOMES:
                problems.append(f"{where}: channel {ch!r} is not letter, call or email")
                continue
            if oc not in OUTCOMES[ch]:
                problems.append(f"{where}: outcome {oc!r} for {ch}: use one of "
                                f"{', '.join(OUTCOMES[ch])}")
                continue
            cur.execute("SELECT 1 FROM household WHERE id = %s", (hid,))
            if cur.fetchone() is None:
                problems.append(f"{where}: unknown household {hid!r}")
                continue
            at_s = (r.get("at") or "").strip()
            try:
                at = _dt.datetime.fromisoformat(at_s) if at_s else _dt.datetime.now(
                    _dt.UTC)
                if at.tzinfo is None:
                    at = at.replace(tzinfo=_dt.UTC)
            except ValueError:
                problems.append(f"{where}: at {at_s!r} is not an ISO date/time")
                continue
            mid, kind = None, ch
            if ch == "email":
                addr = (r.get("address") or "").strip()
                rnd = (r.get("round") or "").strip()
                cur.execute("SELECT id FROM mailbox WHERE lower(address) = lower(%s) AND "
                            "household_id = %s", (addr, hid))
                row = cur.fetchone()
                if row is None or not rnd.isdigit():
                    problems.append(f"{where}: email outcomes need the household's address "
                                    "and the round")
                    continue
                mid, kind = row[0], f"email_round_{int(rnd)}"
            rows.append((hid, mid, kind, ch, oc, OUTCOMES[ch][oc], at,
                         (r.get("by") or "").strip() or recorded_by,
                         (r.get("note") or "").strip() or None, where))
    if problems:
        conn.rollback()
        raise RecordError(problems)
    with conn:
        with conn.cursor() as cur:
            for hid, mid, kind, ch, oc, status, at, by, note, where in rows:
                nid = _upsert_notice(conn, hid, mid, campaign, kind, ch, status, None,
                                     {"last_outcome": oc}, at)
                cur.execute("""INSERT INTO notice_outcome (notice_id, outcome, status, at,
                               recorded_by, note, source) VALUES (%s,%s,%s,%s,%s,%s,%s)""",
                            (nid, oc, status, at, by, note, where))
    return {"recorded": len(rows)}


# -- the gate -----------------------------------------------------------------------------------
def household_gaps(conn, hh: Household, *, campaign: str, at: _dt.datetime) -> list[str]:
    """What is missing for one affected household (empty: the policy is satisfied)."""
    with conn.cursor() as cur:
        cur.execute("""SELECT mailbox_id, kind, channel, status, sent_at, detail
                       FROM notice WHERE household_id = %s AND campaign = %s""",
                    (hh.id, campaign))
        notes = cur.fetchall()
    p = hh.policy
    gaps = []
    first_sent = None
    for mid, address in hh.mailboxes.items():
        ok_rounds = set()
        for m, kind, ch, status, sent_at, _d in notes:
            if m == mid and ch == "email" and kind.startswith("email_round_") and \
                    status in OK_SENT:
                ok_rounds.add(int(kind.rsplit("_", 1)[1]))
                if kind == "email_round_1" and sent_at is not None:
                    first_sent = sent_at if first_sent is None else min(first_sent, sent_at)
        missing = [n for n in range(1, p.email_rounds + 1) if n not in ok_rounds]
        if missing:
            gaps.append(f"email round(s) {','.join(map(str, missing))} of {p.email_rounds} "
                        f"not sent to {address}")
    for ch, want, ok in (("letter", p.letter, OK_SENT), ("call", p.call, ("acknowledged",))):
        if not want:
            continue
        row = next((n for n in notes if n[1] == ch and n[2] == ch and n[0] is None), None)
        if row is None:
            gaps.append(f"no {ch} recorded")
        elif row[3] not in ok:
            last = (row[5] or {}).get("last_outcome") or row[3]
            gaps.append(f"{ch} not done (status {row[3]}, last outcome {last})"
                        if ch == "letter" else f"call: customer not reached (last outcome {last})")
    if p.email_rounds and p.lead_days and first_sent is not None and \
            first_sent > at - _dt.timedelta(days=p.lead_days):
        gaps.append(f"first email round went out {first_sent:%Y-%m-%d}, less than "
                    f"{p.lead_days} days before {at:%Y-%m-%d}")
    return gaps


def notice_gate_check(conn, domain: str, *, at: _dt.datetime | None = None,
                      campaign: str = CAMPAIGN) -> list[str]:
    """The cutover gate's notice condition for `domain`: [] if every affected household on the
    domain has satisfied its building's notice policy, else one reason per household naming it,
    its building, what changes for it and what is missing. Read-only."""
    at = at or _dt.datetime.now(_dt.UTC)
    reasons = []
    hhs = households(conn, domain=domain)
    for hh in hhs.values():
        if not hh.affected:
            continue
        gaps = household_gaps(conn, hh, campaign=campaign, at=at)
        if gaps:
            kinds = sorted({k for _m, _a, k, _t in hh.changes})
            reasons.append(f"household {hh.id} (building {hh.building_id}"
                           f"{', ' + hh.contact_name if hh.contact_name else ''}; changes: "
                           f"{', '.join(kinds)}): " + "; ".join(gaps))
    return reasons
