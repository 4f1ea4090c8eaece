-- 0013_accepted_alterations: altered messages a building spec accepts by class (issue #13, point 4).
--
-- The copier records a destination alteration as ledger state 5 with its class (0008). A building
-- spec may accept classes by name (`accepted_alterations`); the verifier then classifies each
-- altered message itself, from the bytes both servers serve now, and records it as a
-- non-blocking `digest_mismatch` finding when the spec accepts its class and the copier recorded
-- the same class at copy time. Accepted, never silent: the class is on the finding and the count
-- on the reconciliation row (and in `proof.detail.accepted_alterations`).

-- the class of an altered message as the verifier classified it (blocking or accepted)
ALTER TABLE reconciliation_finding ADD COLUMN alteration_class text
    CHECK (alteration_class IN ('line_endings', 'header_bytes_replaced', 'truncated', 'other'));

-- accepted_altered: altered messages the spec accepted; accepted_altered_bytes: their destination
-- bytes minus their source bytes, taken out of dest_bytes_net (so src_bytes_net = dest_bytes_net
-- still holds and says why)
ALTER TABLE reconciliation
    ADD COLUMN accepted_altered       int NOT NULL DEFAULT 0 CHECK (accepted_altered >= 0),
    ADD COLUMN accepted_altered_bytes bigint NOT NULL DEFAULT 0;
