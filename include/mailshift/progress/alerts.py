"""The facts an alert needs, read from the database (never from XCom): which mailboxes of a
building are not proven, why (rules.proof), and the first folder a finding names."""

from __future__ import annotations

from mailshift.notify.alerts import MailboxFinding, ProofFacts
from mailshift.rules import proof as proof_rules
from mailshift.rules import states
from mailshift.store.proofs import mailbox_facts


def proof_facts(conn, building_id: str) -> ProofFacts:
    """The building's domain and its not-proven mailboxes (proof state, reasons, first folder)."""
    facts = mailbox_facts(conn, building=building_id)
    bad = []
    for f in facts:
        ps = proof_rules.decide(f)
        if ps.state in states.PROOF_OK:
            continue
        folder = next((x.src_folder or x.dest_folder for x in f.findings
                       if x.waiver_id is None and (x.src_folder or x.dest_folder)), None)
        bad.append(MailboxFinding(f.address, ps.state, ps.reason_texts(), folder))
    domain = facts[0].domain if facts else None
    return ProofFacts(building_id, domain, bad, len(facts))
