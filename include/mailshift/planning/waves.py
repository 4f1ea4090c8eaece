"""Waves at run time: which buildings a wave holds, and how far it got (for the wave DAG)."""

from __future__ import annotations

from mailshift.rules import proof
from mailshift.store import plans, proofs


def wave_buildings(conn, wave_number: int) -> list[str]:
    return plans.wave_building_ids(conn, wave_number)


def wave_totals(conn, wave_number: int) -> dict:
    """Buildings, mailboxes, proven mailboxes (rules.proof), messages and bytes copied for one wave.

    The copied totals come with the facts (fresh `mailbox_ledger` rows), as the gate's do: only
    mailboxes whose summary is behind the ledger are counted live, not every ledger row again."""
    facts = proofs.mailbox_facts(conn, wave=wave_number)
    t = proof.tally([proof.decide(f) for f in facts])
    messages, bytes_, _live = proofs.summarised_totals(conn, facts)
    return {"buildings": t["buildings"], "mailboxes": t["mailboxes"], "proven_mailboxes": t["ok"],
            "not_proven": t["not_proven"], "proven_buildings": t["buildings_ok"],
            "messages": messages, "bytes": bytes_}
