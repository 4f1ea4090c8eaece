-- 0014_progress_counts: refused and altered messages on every level of the operator UI.
--
-- Issue #16: the overview, the waves, the domains and the buildings show refused / waived /
-- altered / exception counts. Waived (mailboxes_waived) is summarised since 0007 and open
-- exceptions are counted live (partial indexes, a few rows); refused and altered messages
-- need the ledger, so they are summarised like the other state counts:
--   mailbox_progress.n_altered           ledger rows in state 5 (stored, not byte-identical)
--   building_progress.messages_refused   sum of n_refused over the building's mailboxes
--   building_progress.messages_altered   sum of n_altered
-- Both functions keep their single PK range scan per mailbox / rollup per building.

ALTER TABLE mailbox_progress ADD COLUMN n_altered int NOT NULL DEFAULT 0;
ALTER TABLE building_progress
    ADD COLUMN messages_refused bigint NOT NULL DEFAULT 0,
    ADD COLUMN messages_altered bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION refresh_mailbox_progress(p_mailbox_id int) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO mailbox_progress AS mp (mailbox_id, building_id, n_intent, n_copied, n_refused,
        n_failed, n_expunged, n_altered, bytes_copied, src_messages, passes, running, last_pass_kind,
        last_pass_status, first_finished_at, last_finished_at, proof_verdict, proof_kind,
        proven_at, refreshed_at)
    SELECT m.id, h.building_id, coalesce(l.n_intent, 0), coalesce(l.n_copied, 0),
           coalesce(l.n_refused, 0), coalesce(l.n_failed, 0), coalesce(l.n_expunged, 0),
           coalesce(l.n_altered, 0),
           coalesce(l.bytes_copied, 0), lf.src_messages, coalesce(pc.n, 0), coalesce(pc.running, false),
           lp.kind, lp.status, pc.first_finished, pc.last_finished, pr.verdict, pr.kind,
           pr.proven_at, now()
    FROM mailbox m
    JOIN household h ON h.id = m.household_id
    LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE state = 0) AS n_intent,
               count(*) FILTER (WHERE state = 1) AS n_copied,
               count(*) FILTER (WHERE state = 2) AS n_refused,
               count(*) FILTER (WHERE state = 3) AS n_failed,
               count(*) FILTER (WHERE state = 4) AS n_expunged,
               count(*) FILTER (WHERE state = 5) AS n_altered,
               coalesce(sum(size) FILTER (WHERE state = 1), 0) AS bytes_copied
        FROM message WHERE mailbox_id = p_mailbox_id) l ON true
    LEFT JOIN LATERAL (
        SELECT count(*) AS n, bool_or(status = 'running') AS running,
               min(finished_at) FILTER (WHERE status = 'finished') AS first_finished,
               max(finished_at) FILTER (WHERE status = 'finished') AS last_finished
        FROM pass WHERE mailbox_id = p_mailbox_id) pc ON true
    LEFT JOIN LATERAL (
        SELECT kind, status FROM pass WHERE mailbox_id = p_mailbox_id
        ORDER BY started_at DESC, id DESC LIMIT 1) lp ON true
    LEFT JOIN LATERAL (
        SELECT (counters ->> 'source_messages')::int AS src_messages FROM pass
        WHERE mailbox_id = p_mailbox_id AND status = 'finished'
        ORDER BY started_at DESC, id DESC LIMIT 1) lf ON true
    LEFT JOIN LATERAL (
        SELECT verdict, kind, proven_at FROM proof WHERE mailbox_id = p_mailbox_id
        ORDER BY proven_at DESC, id DESC LIMIT 1) pr ON true
    WHERE m.id = p_mailbox_id
    ON CONFLICT (mailbox_id) DO UPDATE SET
        building_id = EXCLUDED.building_id, n_intent = EXCLUDED.n_intent,
        n_copied = EXCLUDED.n_copied, n_refused = EXCLUDED.n_refused,
        n_failed = EXCLUDED.n_failed, n_expunged = EXCLUDED.n_expunged, n_altered = EXCLUDED.n_altered,
        bytes_copied = EXCLUDED.bytes_copied, src_messages = EXCLUDED.src_messages,
        passes = EXCLUDED.passes, running = EXCLUDED.running,
        last_pass_kind = EXCLUDED.last_pass_kind, last_pass_status = EXCLUDED.last_pass_status,
        first_finished_at = EXCLUDED.first_finished_at, last_finished_at = EXCLUDED.last_finished_at,
        proof_verdict = EXCLUDED.proof_verdict, proof_kind = EXCLUDED.proof_kind,
        proven_at = EXCLUDED.proven_at, refreshed_at = EXCLUDED.refreshed_at;
$$;

CREATE OR REPLACE FUNCTION refresh_building_progress(p_building_id text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO building_progress AS bp (building_id, mailboxes, mailboxes_started,
        mailboxes_copied, mailboxes_running, mailboxes_proven, mailboxes_waived, mailboxes_failed,
        messages_copied, bytes_copied, messages_unsettled, messages_refused, messages_altered,
        src_messages, last_activity_at, refreshed_at)
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
           coalesce(sum(mp.n_refused), 0), coalesce(sum(mp.n_altered), 0),
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
        messages_unsettled = EXCLUDED.messages_unsettled, messages_refused = EXCLUDED.messages_refused,
        messages_altered = EXCLUDED.messages_altered, src_messages = EXCLUDED.src_messages,
        last_activity_at = EXCLUDED.last_activity_at, refreshed_at = EXCLUDED.refreshed_at;
$$;

-- n_altered is 0 in the existing rows: the next refresh re-summarises every mailbox
-- (or run `python -m mailshift.progress refresh --rebuild`, set-based).
UPDATE progress_state SET watermark = NULL WHERE id = 1;
