"""Slack messages of the cutover (built like mailshift.notify.slack's: plain dicts, scrubbed)."""

from __future__ import annotations

from mailshift.notify.slack import Message, _mb, _section, gate_blocked  # noqa: F401  (gate_blocked re-exported)


def ttl_not_ready(domain: str, reasons: list[str]) -> Message:
    text = f":hourglass: cutover of {domain} refused by the TTL check: " + "; ".join(reasons)[:500]
    return Message(text, [_section(f":hourglass: *TTL check refused* `{domain}`\n" + "\n".join(f"• {r}" for r in reasons))])


def swap_prerequisite_failed(domain: str, expected: list[str], found: list[str] | None) -> Message:
    text = (f":rotating_light: MX swap for {domain} ABORTED: the zone does not hold the expected old MX "
            f"{expected} (found {found}); nothing was written")
    return Message(text, [_section(f":rotating_light: *MX swap aborted* `{domain}`\nexpected `{expected}`\n"
                                   f"found `{found}`\nNothing was written. Someone changed the MX: find out who.")])


def swap_done(domain: str, old: list[str], new: list[str], approved_by: str, servers: int, serial) -> Message:
    text = (f":arrows_counterclockwise: MX of {domain} swapped {old} -> {new}, approved by {approved_by}; "
            f"{servers} authoritative server(s) serve it (serial {serial}). Draining the old server.")
    return Message(text, [_section(text)])


def cutover_finished(domain: str, passed: bool, mailboxes: int, messages: int, bytes_: int, drained: int,
                     waivers: int, reasons: list[str], reports: list[str]) -> Message:
    icon = ":white_check_mark:" if passed else ":warning:"
    head = (f"{icon} cutover of {domain} {'finished' if passed else 'final proof NOT complete'}: {mailboxes} mailboxes, "
            f"{messages} messages, {_mb(bytes_)}, {drained} drained after the swap, {waivers} waiver(s)")
    body = head
    if reasons:
        body += "\n" + "\n".join(f"• {r}" for r in reasons[:20])
    if reports:
        body += "\nReport: " + ", ".join(reports)
    return Message(head + (f" Report: {reports[0]}" if reports else ""), [_section(body)])


def aborted(domain: str, by: str, reason: str) -> Message:
    text = f":octagonal_sign: cutover of {domain} aborted before the swap by {by}: {reason}. DNS and mailboxes unchanged."
    return Message(text, [_section(text)])
