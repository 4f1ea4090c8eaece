-- 0006_progress: summary tables for the operator UI (mailshift.progress).
--
-- The progress pages must answer in well under a second with 400k households and
-- 1e8..1e9 ledger rows, so they never count `message`. They read:
--   mailbox_progress   one row per mailbox that has ledger activity: state counts and
--                      bytes from ONE primary-key range scan of the mailbox, the latest
--                      pass and the latest proof verdict;
--   building_progress  one row per building: the rollup of its mailboxes (plus the
--                      inventory's mailbox count), i.e. thousands of rows in all;
--   progress_sample    per wave, cumulative copied messages/bytes at a point in time
--                      (the "progress over time" charts and throughput history).
-- Refreshed incrementally by mailshift.progress.store.refresh_changed() (mailboxes whose
-- pass or proof changed since the last refresh, plus every running pass), which the UI
-- plugin runs in the background and `python -m mailshift.progress refresh` runs on demand.
-- The gate never reads these tables (it reads the ledger's partial index).

CREATE TABLE mailbox_progress (
    mailbox_id         int PRIMARY KEY REFERENCES mailbox (id),
    building_id        text NOT NULL REFERENCES building (id),
    n_intent           int NOT NULL DEFAULT 0,
    n_copied           int NOT NULL DEFAULT 0,
    n_refused          int NOT NULL DEFAULT 0,
    n_failed           int NOT NULL DEFAULT 0,
    n_expunged         int NOT NULL DEFAULT 0,
    bytes_copied       bigint NOT NULL DEFAULT 0,
    src_messages       int,            -- source messages seen by the latest finished pass
    passes             int NOT NULL DEFAULT 0,
    running            bool NOT NULL DEFAULT false,
    last_pass_kind     text,
    last_pass_status   text,
    first_finished_at  timestamptz,    -- first finished pass (first copy)
    last_finished_at   timestamptz,    -- latest finished pass
    proof_verdict      text,           -- latest proof row's verdict (NULL: never verified)
    proof_kind         text,
    proven_at          timestamptz,
    refreshed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mailbox_progress_building_idx ON mailbox_progress (building_id);

CREATE TABLE building_progress (
    building_id         text PRIMARY KEY REFERENCES building (id),
    mailboxes           int NOT NULL DEFAULT 0,   -- inventory count
    mailboxes_started   int NOT NULL DEFAULT 0,   -- at least one pass
    mailboxes_copied    int NOT NULL DEFAULT 0,   -- a finished pass and nothing in intent/failed
    mailboxes_running   int NOT NULL DEFAULT 0,
    mailboxes_proven    int NOT NULL DEFAULT 0,   -- latest verdict proven / proven_with_waivers
    mailboxes_failed    int NOT NULL DEFAULT 0,   -- latest verdict failed
    messages_copied     bigint NOT NULL DEFAULT 0,
    bytes_copied        bigint NOT NULL DEFAULT 0,
    messages_unsettled  bigint NOT NULL DEFAULT 0, -- intent + refused + failed
    src_messages        bigint NOT NULL DEFAULT 0,
    last_activity_at    timestamptz,
    refreshed_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE progress_sample (
    wave_id           int NOT NULL,
    sampled_at        timestamptz NOT NULL,
    messages          bigint NOT NULL,
    bytes             bigint NOT NULL,
    mailboxes_copied  int,
    mailboxes_proven  int,
    source            text NOT NULL DEFAULT 'refresh' CHECK (source IN ('refresh', 'backfill')),
    PRIMARY KEY (wave_id, sampled_at)
);
CREATE INDEX progress_sample_time_idx ON progress_sample (sampled_at);

CREATE TABLE progress_state (
    id               int PRIMARY KEY CHECK (id = 1),
    watermark        timestamptz,      -- pass/proof changes up to here are summarised
    last_refresh_at  timestamptz,
    last_sample_at   timestamptz,
    last_stats       jsonb
);
INSERT INTO progress_state (id) VALUES (1);

-- change detection for the incremental refresh, and "throughput now"
CREATE INDEX pass_updated_idx ON pass (updated_at);
CREATE INDEX proof_proven_at_idx ON proof (proven_at);
-- support-desk lookup by (a prefix of) an address, case-insensitive
CREATE INDEX mailbox_address_lower_idx ON mailbox (lower(address) text_pattern_ops);

-- One mailbox: one PK range scan of its ledger partition + the latest pass/proof.
CREATE FUNCTION refresh_mailbox_progress(p_mailbox_id int) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO mailbox_progress AS mp (mailbox_id, building_id, n_intent, n_copied, n_refused,
        n_failed, n_expunged, bytes_copied, src_messages, passes, running, last_pass_kind,
        last_pass_status, first_finished_at, last_finished_at, proof_verdict, proof_kind,
        proven_at, refreshed_at)
    SELECT m.id, h.building_id, coalesce(l.n_intent, 0), coalesce(l.n_copied, 0),
           coalesce(l.n_refused, 0), coalesce(l.n_failed, 0), coalesce(l.n_expunged, 0),
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
        n_failed = EXCLUDED.n_failed, n_expunged = EXCLUDED.n_expunged,
        bytes_copied = EXCLUDED.bytes_copied, src_messages = EXCLUDED.src_messages,
        passes = EXCLUDED.passes, running = EXCLUDED.running,
        last_pass_kind = EXCLUDED.last_pass_kind, last_pass_status = EXCLUDED.last_pass_status,
        first_finished_at = EXCLUDED.first_finished_at, last_finished_at = EXCLUDED.last_finished_at,
        proof_verdict = EXCLUDED.proof_verdict, proof_kind = EXCLUDED.proof_kind,
        proven_at = EXCLUDED.proven_at, refreshed_at = EXCLUDED.refreshed_at;
$$;

-- One building: roll its mailbox_progress rows up (index on building_id) + inventory count.
CREATE FUNCTION refresh_building_progress(p_building_id text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO building_progress AS bp (building_id, mailboxes, mailboxes_started,
        mailboxes_copied, mailboxes_running, mailboxes_proven, mailboxes_failed,
        messages_copied, bytes_copied, messages_unsettled, src_messages, last_activity_at,
        refreshed_at)
    SELECT b.id,
           (SELECT count(*) FROM mailbox m JOIN household h ON h.id = m.household_id
            WHERE h.building_id = b.id),
           count(mp.mailbox_id) FILTER (WHERE mp.passes > 0),
           count(mp.mailbox_id) FILTER (WHERE mp.first_finished_at IS NOT NULL
                                          AND mp.n_intent = 0 AND mp.n_failed = 0),
           count(mp.mailbox_id) FILTER (WHERE mp.running),
           count(mp.mailbox_id) FILTER (WHERE mp.proof_verdict IN ('proven', 'proven_with_waivers')),
           count(mp.mailbox_id) FILTER (WHERE mp.proof_verdict = 'failed'),
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
        mailboxes_proven = EXCLUDED.mailboxes_proven, mailboxes_failed = EXCLUDED.mailboxes_failed,
        messages_copied = EXCLUDED.messages_copied, bytes_copied = EXCLUDED.bytes_copied,
        messages_unsettled = EXCLUDED.messages_unsettled, src_messages = EXCLUDED.src_messages,
        last_activity_at = EXCLUDED.last_activity_at, refreshed_at = EXCLUDED.refreshed_at;
$$;
