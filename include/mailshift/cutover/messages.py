"""Slack messages of the cutover (built like mailshift.notify.slack's: plain dicts, scrubbed).

Everything that comes from outside (domain, reasons, server answers, names, report links) is
escaped with `notify.slack.escape`, so `<`, `>` and `&` can never form a link or a mention.
`approval_text` is Markdown for Airflow's approval form, not Slack, and is not escaped."""

from __future__ import annotations

from mailshift.notify.slack import Message, _mb, _section, escape, gate_blocked  # noqa: F401  (gate_blocked re-exported)


def _list(items) -> str:
    return escape(", ".join(str(i) for i in items)) if isinstance(items, list | tuple) else escape(items)


def ttl_not_ready(domain: str, reasons: list[str]) -> Message:
    text = f":hourglass: cutover of {escape(domain)} refused by the TTL check: " + escape("; ".join(reasons)[:500])
    return Message(text, [_section(f":hourglass: *TTL check refused* `{escape(domain)}`\n"
                                   + "\n".join(f"• {escape(r)}" for r in reasons))])


def swap_prerequisite_failed(domain: str, expected: list[str], found: list[str] | None) -> Message:
    text = (f":rotating_light: MX swap for {escape(domain)} ABORTED: the zone does not hold the expected old MX "
            f"[{_list(expected)}] (found {_list(found)}); nothing was written")
    return Message(text, [_section(f":rotating_light: *MX swap aborted* `{escape(domain)}`\nexpected `{_list(expected)}`\n"
                                   f"found `{_list(found)}`\nNothing was written. Someone changed the MX: find out who.")])


def swap_done(domain: str, old: list[str], new: list[str], approved_by: str, servers: int, serial) -> Message:
    text = (f":arrows_counterclockwise: MX of {escape(domain)} swapped [{_list(old)}] -> [{_list(new)}], approved by "
            f"{escape(approved_by)}; {servers} authoritative server(s) serve it (serial {escape(serial)}). "
            "Draining the old server.")
    return Message(text, [_section(text)])


def _report_link(report: str) -> str:
    """A report as a Slack link when it is a URL; a path on a worker is named, never linked."""
    r = str(report)
    if r.startswith(("http://", "https://")):
        return f"<{escape(r)}|proof report>"
    return escape(r.rsplit("/", 1)[-1])


def cutover_finished(domain: str, passed: bool, mailboxes: int, messages: int, bytes_: int, drained: int,
                     waivers: int, reasons: list[str], reports: list[str]) -> Message:
    icon = ":white_check_mark:" if passed else ":warning:"
    head = (f"{icon} cutover of {escape(domain)} {'finished' if passed else 'final proof NOT complete'}: "
            f"{mailboxes} mailboxes, {messages} messages, {_mb(bytes_)}, {drained} drained after the swap, "
            f"{waivers} waiver(s)")
    body = head
    if reasons:
        body += "\n" + "\n".join(f"• {escape(r)}" for r in reasons[:20])
    if reports:
        body += "\nReport: " + ", ".join(_report_link(r) for r in reports)
    return Message(head + (f" Report: {_report_link(reports[0])}" if reports else ""), [_section(body)])


def aborted(domain: str, by: str, reason: str) -> Message:
    text = (f":octagonal_sign: cutover of {escape(domain)} aborted before the swap by {escape(by)}: {escape(reason)}. "
            "DNS and mailboxes unchanged.")
    return Message(text, [_section(text)])


def approval_text(domain: str, summary: dict, new_mx: list[str] | str | None = None) -> str:
    """The body of the MX-swap approval: the gate's summary as markdown a person reads (waivers
    one per line, by whom and why), never a Python dict."""
    waivers = summary.get("waivers") or []
    lines = [f"Domain **{domain}**: the zero-loss gate passed.", "",
             f"- buildings: {summary.get('buildings', 0):,}, mailboxes: {summary.get('mailboxes', 0):,} "
             f"({summary.get('mailboxes_ok', 0):,} proven or waived)",
             f"- messages copied: {summary.get('messages', 0):,} ({_mb(int(summary.get('bytes', 0)))})",
             f"- waivers: {len(waivers)}"]
    for w in waivers[:20]:
        lines.append(f"  - #{w.get('id')} {w.get('mailbox')} ({w.get('scope')}): {w.get('reason')} "
                     f"- approved by {w.get('approved_by')}")
    if len(waivers) > 20:
        lines.append(f"  - and {len(waivers) - 20} more (mailshift report)")
    if new_mx:
        lines += ["", f"Approving swaps the MX to {', '.join(new_mx) if isinstance(new_mx, list) else new_mx}. "
                      "There is no rollback."]
    return "\n".join(lines)


def guarantee_lines(g: dict | None) -> list[str]:
    """What the incremental final proof guaranteed, for how many messages (empty: none given)."""
    if not g:
        return []
    return [f"guarantee: {g.get('messages_reread_in_full', 0):,} message(s) in {g.get('mailboxes_reread_in_full', 0):,} "
            "mailbox(es) changed since the pre-cutover proof were re-read in full (every digest compared); "
            f"{g.get('messages_ledger_plus_sample', 0):,} message(s) in {g.get('mailboxes_ledger_plus_sample', 0):,} "
            "unchanged mailbox(es) are covered by the ledger (unchanged since their full proof) plus a re-read of "
            f"{g.get('messages_sampled', 0):,} sampled message(s) (sample rate {g.get('sample_rate', 0):.0%})"]
