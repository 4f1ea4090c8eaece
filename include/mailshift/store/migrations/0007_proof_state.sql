-- 0007_proof_state: the progress summaries carry the proof STATE, not the verdict.
--
-- A mailbox's proof state (proven / waived / not_proven) is decided in one place,
-- mailshift.rules.proof: it weighs the latest verification's findings against the waivers
-- active NOW, a ledger changed since the verification, and the copy passes. The recorded
-- `proof.verdict` (proven / proven_with_waivers / failed) is only a fact of one verify run, so
-- the summaries must not count it as "proven". mailshift.store.progress computes the state in
-- Python (rules.proof.proof_states, in batches) for every mailbox it re-summarises and writes
-- it here; a waiver approved or revoked re-summarises its mailbox.
--
-- mailbox_progress.proof_state    NULL until the mailbox is next re-summarised
-- building_progress.mailboxes_proven   now: proof_state IN ('proven', 'waived')
-- building_progress.mailboxes_waived   the part of mailboxes_proven that is waived
-- building_progress.mailboxes_failed   now: not proven although the latest verification ran and
--                                     failed (proof_verdict 'failed', not covered by waivers)

ALTER TABLE mailbox_progress
    ADD COLUMN proof_state text CHECK (proof_state IN ('proven', 'waived', 'not_proven'));

ALTER TABLE building_progress
    ADD COLUMN mailboxes_waived int NOT NULL DEFAULT 0;

COMMENT ON COLUMN mailbox_progress.proof_state IS
    'mailshift.rules.proof state when the row was refreshed (proven / waived / not_proven)';
COMMENT ON COLUMN mailbox_progress.proof_verdict IS
    'the latest proof row''s recorded verdict (a fact of that verify run, not the proof state)';
COMMENT ON COLUMN building_progress.mailboxes_proven IS
    'mailboxes whose proof_state is proven or waived';

-- One building: roll its mailbox_progress rows up (index on building_id) + inventory count.
CREATE OR REPLACE FUNCTION refresh_building_progress(p_building_id text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO building_progress AS bp (building_id, mailboxes, mailboxes_started,
        mailboxes_copied, mailboxes_running, mailboxes_proven, mailboxes_waived, mailboxes_failed,
        messages_copied, bytes_copied, messages_unsettled, src_messages, last_activity_at,
        refreshed_at)
    SELECT b.id,
           (SELECT count(*) FROM mailbox_scope s WHERE s.building_id = b.id),
           count(mp.mailbox_id) FILTER (WHERE mp.passes > 0),
           count(mp.mailbox_id) FILTER (WHERE mp.first_finished_at IS NOT NULL
                                          AND mp.n_intent = 0 AND mp.n_failed = 0),
           count(mp.mailbox_id) FILTER (WHERE mp.running),
           count(mp.mailbox_id) FILTER (WHERE mp.proof_state IN ('proven', 'waived')),
           count(mp.mailbox_id) FILTER (WHERE mp.proof_state = 'waived'),
           count(mp.mailbox_id) FILTER (WHERE mp.proof_state = 'not_proven' AND mp.proof_verdict = 'failed'),
           coalesce(sum(mp.n_copied), 0), coalesce(sum(mp.bytes_copied), 0),
           coalesce(sum(mp.n_intent + mp.n_refused + mp.n_failed), 0),
           coalesce(sum(mp.src_messages), 0),
           greatest(max(mp.last_finished_at), max(mp.proven_at)), now()
    FROM building b
    LEFT JOIN mailbox_progress mp ON mp.building_id = b.id
    WHERE b.id = p_building_id
    GROUP BY b.id
    ON CONFLICT (building_id) DO UPDATE SET
        mailboxes = EXCLUDED.mailboxes, mailboxes_started = EXCLUDED.mailboxes_started,
        mailboxes_copied = EXCLUDED.mailboxes_copied, mailboxes_running = EXCLUDED.mailboxes_running,
        mailboxes_proven = EXCLUDED.mailboxes_proven, mailboxes_waived = EXCLUDED.mailboxes_waived,
        mailboxes_failed = EXCLUDED.mailboxes_failed,
        messages_copied = EXCLUDED.messages_copied, bytes_copied = EXCLUDED.bytes_copied,
        messages_unsettled = EXCLUDED.messages_unsettled, src_messages = EXCLUDED.src_messages,
        last_activity_at = EXCLUDED.last_activity_at, refreshed_at = EXCLUDED.refreshed_at;
$$;

-- proof_state is NULL in the existing rows: the next refresh re-summarises every mailbox.
UPDATE progress_state SET watermark = NULL WHERE id = 1;
