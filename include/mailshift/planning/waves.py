"""Waves at run time: which buildings a wave holds, and how far it got (for the wave DAG)."""

from __future__ import annotations

from mailshift.rules import proof
from mailshift.store import plans, proofs


def wave_buildings(conn, wave_number: int) -> list[str]:
    return plans.wave_building_ids(conn, wave_number)


def wave_totals(conn, wave_number: int) -> dict:
    """Buildings, mailboxes, proven mailboxes (rules.proof), messages and bytes copied for one wave."""
    found = proof.proof_states(conn, wave=wave_number)
    t = proof.tally(found)
    messages, bytes_ = proofs.copied_totals(conn, [s.mailbox_id for s in found])
    return {"buildings": t["buildings"], "mailboxes": t["mailboxes"], "proven_mailboxes": t["ok"],
            "not_proven": t["not_proven"], "proven_buildings": t["buildings_ok"],
            "messages": messages, "bytes": bytes_}
