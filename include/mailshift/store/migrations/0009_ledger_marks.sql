-- 0009_ledger_marks: the gate and the proof summaries without scanning the ledger.
--
-- The gate's facts per mailbox (mailshift.store.proofs.mailbox_facts) used to read
-- max(message.updated_at) by scanning every ledger row of the mailbox, and the summary
-- counted every copied row: 200 s for 500,000 mailboxes / 99.9M rows. Now:
--
--   message_mailbox_updated_idx   (mailbox_id, updated_at): the ledger's newest change of a
--                                 mailbox is ONE backward index probe - read live, so the
--                                 "ledger changed since the proof" rule can never be fooled
--                                 by a stale summary;
--   mailbox_ledger                one row per mailbox with ledger rows: the copied messages
--                                 and bytes, rows in intent, and the newest updated_at it has
--                                 seen (its watermark). Maintained in the writer's own
--                                 transaction by statement-level triggers on `message` (one
--                                 aggregated UPDATE per INSERT/UPDATE/DELETE statement, the
--                                 copier writes whole batches per statement).
--
-- Freshness: a row is trusted only when its watermark EQUALS the live max(updated_at) of the
-- mailbox (the probe above); otherwise the reader counts that mailbox live (one primary-key
-- range scan). Rows are never trusted for anything the index answers live.

CREATE INDEX message_mailbox_updated_idx ON message (mailbox_id, updated_at);

CREATE TABLE mailbox_ledger (
    mailbox_id    int PRIMARY KEY REFERENCES mailbox (id),
    n_rows        bigint NOT NULL DEFAULT 0,
    n_intent      bigint NOT NULL DEFAULT 0,
    n_copied      bigint NOT NULL DEFAULT 0,
    bytes_copied  bigint NOT NULL DEFAULT 0,
    ledger_now    timestamptz               -- watermark: newest message.updated_at seen
);

CREATE FUNCTION mailbox_ledger_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- one aggregated delta per mailbox touched by the statement
    IF TG_OP = 'INSERT' THEN
        INSERT INTO mailbox_ledger AS ml (mailbox_id, n_rows, n_intent, n_copied, bytes_copied, ledger_now)
        SELECT mailbox_id, count(*), count(*) FILTER (WHERE state = 0), count(*) FILTER (WHERE state = 1),
               coalesce(sum(size) FILTER (WHERE state = 1), 0), max(updated_at)
        FROM new_rows GROUP BY mailbox_id
        ON CONFLICT (mailbox_id) DO UPDATE SET
            n_rows = ml.n_rows + EXCLUDED.n_rows, n_intent = ml.n_intent + EXCLUDED.n_intent,
            n_copied = ml.n_copied + EXCLUDED.n_copied, bytes_copied = ml.bytes_copied + EXCLUDED.bytes_copied,
            ledger_now = greatest(ml.ledger_now, EXCLUDED.ledger_now);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO mailbox_ledger AS ml (mailbox_id, n_rows, n_intent, n_copied, bytes_copied, ledger_now)
        SELECT d.mailbox_id, 0, sum(d.n_intent), sum(d.n_copied), sum(d.bytes_copied), max(d.ledger_now)
        FROM (SELECT mailbox_id, count(*) FILTER (WHERE state = 0) AS n_intent,
                     count(*) FILTER (WHERE state = 1) AS n_copied,
                     coalesce(sum(size) FILTER (WHERE state = 1), 0) AS bytes_copied, max(updated_at) AS ledger_now
              FROM new_rows GROUP BY mailbox_id
              UNION ALL
              SELECT mailbox_id, -count(*) FILTER (WHERE state = 0), -count(*) FILTER (WHERE state = 1),
                     -coalesce(sum(size) FILTER (WHERE state = 1), 0), NULL
              FROM old_rows GROUP BY mailbox_id) d
        GROUP BY d.mailbox_id
        ON CONFLICT (mailbox_id) DO UPDATE SET
            n_intent = ml.n_intent + EXCLUDED.n_intent, n_copied = ml.n_copied + EXCLUDED.n_copied,
            bytes_copied = ml.bytes_copied + EXCLUDED.bytes_copied,
            ledger_now = greatest(ml.ledger_now, EXCLUDED.ledger_now);
    ELSE  -- DELETE: the watermark may now be above the ledger's: the reader then counts live
        UPDATE mailbox_ledger ml SET n_rows = ml.n_rows - d.n, n_intent = ml.n_intent - d.n_intent,
            n_copied = ml.n_copied - d.n_copied, bytes_copied = ml.bytes_copied - d.bytes_copied
        FROM (SELECT mailbox_id, count(*) AS n, count(*) FILTER (WHERE state = 0) AS n_intent,
                     count(*) FILTER (WHERE state = 1) AS n_copied,
                     coalesce(sum(size) FILTER (WHERE state = 1), 0) AS bytes_copied
              FROM old_rows GROUP BY mailbox_id) d
        WHERE ml.mailbox_id = d.mailbox_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER message_ledger_ins AFTER INSERT ON message
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mailbox_ledger_apply();
CREATE TRIGGER message_ledger_upd AFTER UPDATE ON message
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mailbox_ledger_apply();
CREATE TRIGGER message_ledger_del AFTER DELETE ON message
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION mailbox_ledger_apply();

-- the ledger written before this migration (one scan, once)
INSERT INTO mailbox_ledger (mailbox_id, n_rows, n_intent, n_copied, bytes_copied, ledger_now)
SELECT mailbox_id, count(*), count(*) FILTER (WHERE state = 0), count(*) FILTER (WHERE state = 1),
       coalesce(sum(size) FILTER (WHERE state = 1), 0), max(updated_at)
FROM message GROUP BY mailbox_id;
