-- 0012_mailbox_latest: the latest copy pass and the latest proof of each mailbox, kept by triggers.
--
-- The gate and the proof summaries (mailshift.store.proofs.mailbox_facts) read, per mailbox, the
-- latest `pass` (started_at DESC, id DESC) and the latest `proof` (proven_at DESC, id DESC). At
-- 500,000 mailboxes those were two index probes per mailbox (~3 s of the gate); now one row of
-- `mailbox_latest` per mailbox holds both, joined in one pass.
--
-- Kept exact in the writer's own transaction by statement-level triggers on `pass` and `proof`:
--   INSERT / UPDATE   the newest row of the statement per mailbox replaces the kept one only if it
--                     is the kept one (its status/detail changed) or newer by the same order as the
--                     readers' (started_at, id) / (proven_at, id). This merge is a maximum, so
--                     concurrent writers commute: INSERT ... ON CONFLICT DO UPDATE re-checks its
--                     WHERE against the newest committed row after waiting for its lock.
--   UPDATE that moves a row (another mailbox, start time or id), DELETE
--                     the mailboxes whose kept row it was are probed again (one index probe each).
--   TRUNCATE          every kept pass / proof is cleared.
-- `live=True` in mailbox_facts still probes `pass` and `proof` directly: the tests compare the two
-- (tests/integration/test_cutover_gate_summary.py). Triggers disabled by hand (ALTER TABLE ...
-- DISABLE TRIGGER, session_replication_role = replica) would leave these rows behind: do not.
-- The ledger's newest change is NOT kept here: the gate probes it live (migration 0009).

CREATE TABLE mailbox_latest (
    mailbox_id     int PRIMARY KEY REFERENCES mailbox (id),
    pass_id        bigint,
    pass_kind      text,
    pass_status    text,
    pass_started   timestamptz,
    pass_error     text,
    proof_id       bigint,
    verify_run_id  bigint,
    proof_kind     text,
    verdict        text,
    ledger_as_of   timestamptz,
    proven_at      timestamptz,
    src_messages   int
);
CREATE INDEX mailbox_latest_pass_idx ON mailbox_latest (pass_id);
CREATE INDEX mailbox_latest_proof_idx ON mailbox_latest (proof_id);

-- the latest pass of each mailbox in `ids`, probed (pass_mailbox_idx)
CREATE FUNCTION mailbox_latest_pass_probe(ids int[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE mailbox_latest ml SET (pass_id, pass_kind, pass_status, pass_started, pass_error) =
        (SELECT x.id, x.kind, x.status, x.started_at, x.detail ->> 'error' FROM pass x
         WHERE x.mailbox_id = ml.mailbox_id ORDER BY x.started_at DESC, x.id DESC LIMIT 1)
    WHERE ml.mailbox_id = ANY(ids);
$$;

-- the latest proof of each mailbox in `ids`, probed (proof_mailbox_idx)
CREATE FUNCTION mailbox_latest_proof_probe(ids int[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE mailbox_latest ml SET (proof_id, verify_run_id, proof_kind, verdict, ledger_as_of, proven_at,
                                  src_messages) =
        (SELECT p.id, p.verify_run_id, p.kind, p.verdict, p.ledger_as_of, p.proven_at, p.src_messages FROM proof p
         WHERE p.mailbox_id = ml.mailbox_id ORDER BY p.proven_at DESC, p.id DESC LIMIT 1)
    WHERE ml.mailbox_id = ANY(ids);
$$;

CREATE FUNCTION mailbox_latest_pass_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE mailbox_latest SET pass_id = NULL, pass_kind = NULL, pass_status = NULL, pass_started = NULL,
                                  pass_error = NULL WHERE pass_id IS NOT NULL;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO mailbox_latest AS ml (mailbox_id, pass_id, pass_kind, pass_status, pass_started, pass_error)
        SELECT DISTINCT ON (n.mailbox_id) n.mailbox_id, n.id, n.kind, n.status, n.started_at, n.detail ->> 'error'
        FROM new_rows n ORDER BY n.mailbox_id, n.started_at DESC, n.id DESC
        ON CONFLICT (mailbox_id) DO UPDATE SET
            pass_id = EXCLUDED.pass_id, pass_kind = EXCLUDED.pass_kind, pass_status = EXCLUDED.pass_status,
            pass_started = EXCLUDED.pass_started, pass_error = EXCLUDED.pass_error
        WHERE ml.pass_id IS NULL OR ml.pass_id = EXCLUDED.pass_id
           OR (EXCLUDED.pass_started, EXCLUDED.pass_id) > (ml.pass_started, ml.pass_id);
    END IF;
    IF TG_OP = 'UPDATE' THEN   -- a kept pass moved to another mailbox, start time or id: probe again
        PERFORM mailbox_latest_pass_probe(ARRAY(
            SELECT ml.mailbox_id FROM mailbox_latest ml JOIN old_rows o ON o.id = ml.pass_id
            WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = o.id AND n.mailbox_id = o.mailbox_id
                                                         AND n.started_at = o.started_at)));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM mailbox_latest_pass_probe(ARRAY(
            SELECT ml.mailbox_id FROM mailbox_latest ml JOIN old_rows o ON o.id = ml.pass_id));
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION mailbox_latest_proof_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE mailbox_latest SET proof_id = NULL, verify_run_id = NULL, proof_kind = NULL, verdict = NULL,
                                  ledger_as_of = NULL, proven_at = NULL, src_messages = NULL
        WHERE proof_id IS NOT NULL;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO mailbox_latest AS ml (mailbox_id, proof_id, verify_run_id, proof_kind, verdict, ledger_as_of,
                                          proven_at, src_messages)
        SELECT DISTINCT ON (n.mailbox_id) n.mailbox_id, n.id, n.verify_run_id, n.kind, n.verdict, n.ledger_as_of,
               n.proven_at, n.src_messages
        FROM new_rows n ORDER BY n.mailbox_id, n.proven_at DESC, n.id DESC
        ON CONFLICT (mailbox_id) DO UPDATE SET
            proof_id = EXCLUDED.proof_id, verify_run_id = EXCLUDED.verify_run_id, proof_kind = EXCLUDED.proof_kind,
            verdict = EXCLUDED.verdict, ledger_as_of = EXCLUDED.ledger_as_of, proven_at = EXCLUDED.proven_at,
            src_messages = EXCLUDED.src_messages
        WHERE ml.proof_id IS NULL OR ml.proof_id = EXCLUDED.proof_id
           OR (EXCLUDED.proven_at, EXCLUDED.proof_id) > (ml.proven_at, ml.proof_id);
    END IF;
    IF TG_OP = 'UPDATE' THEN   -- a kept proof moved to another mailbox, time or id: probe again
        PERFORM mailbox_latest_proof_probe(ARRAY(
            SELECT ml.mailbox_id FROM mailbox_latest ml JOIN old_rows o ON o.id = ml.proof_id
            WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = o.id AND n.mailbox_id = o.mailbox_id
                                                         AND n.proven_at = o.proven_at)));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM mailbox_latest_proof_probe(ARRAY(
            SELECT ml.mailbox_id FROM mailbox_latest ml JOIN old_rows o ON o.id = ml.proof_id));
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER pass_latest_ins AFTER INSERT ON pass
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mailbox_latest_pass_apply();
CREATE TRIGGER pass_latest_upd AFTER UPDATE ON pass
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mailbox_latest_pass_apply();
CREATE TRIGGER pass_latest_del AFTER DELETE ON pass
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION mailbox_latest_pass_apply();
CREATE TRIGGER pass_latest_trunc AFTER TRUNCATE ON pass
    FOR EACH STATEMENT EXECUTE FUNCTION mailbox_latest_pass_apply();
CREATE TRIGGER proof_latest_ins AFTER INSERT ON proof
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mailbox_latest_proof_apply();
CREATE TRIGGER proof_latest_upd AFTER UPDATE ON proof
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mailbox_latest_proof_apply();
CREATE TRIGGER proof_latest_del AFTER DELETE ON proof
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION mailbox_latest_proof_apply();
CREATE TRIGGER proof_latest_trunc AFTER TRUNCATE ON proof
    FOR EACH STATEMENT EXECUTE FUNCTION mailbox_latest_proof_apply();

-- the passes and proofs written before this migration (the triggers above exist and hold their
-- lock from here on, so nothing is written between this read and the commit)
INSERT INTO mailbox_latest (mailbox_id, pass_id, pass_kind, pass_status, pass_started, pass_error,
                            proof_id, verify_run_id, proof_kind, verdict, ledger_as_of, proven_at, src_messages)
SELECT coalesce(lpass.mailbox_id, lp.mailbox_id), lpass.id, lpass.kind, lpass.status, lpass.started_at, lpass.error,
       lp.id, lp.verify_run_id, lp.kind, lp.verdict, lp.ledger_as_of, lp.proven_at, lp.src_messages
FROM (SELECT DISTINCT ON (x.mailbox_id) x.mailbox_id, x.id, x.kind, x.status, x.started_at,
             x.detail ->> 'error' AS error
      FROM pass x ORDER BY x.mailbox_id, x.started_at DESC, x.id DESC) lpass
FULL JOIN (SELECT DISTINCT ON (p.mailbox_id) p.mailbox_id, p.id, p.verify_run_id, p.kind, p.verdict, p.ledger_as_of,
                  p.proven_at, p.src_messages
           FROM proof p ORDER BY p.mailbox_id, p.proven_at DESC, p.id DESC) lp ON lp.mailbox_id = lpass.mailbox_id;
