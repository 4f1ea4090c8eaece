-- Operator day (issue #16): one Slack alert per problem, and the support-desk look-ups.

-- Every alert key posted once: the first caller inserts and posts, later callers about the same
-- problem (the failed task's callback after the proof's own alert) only count.
CREATE TABLE alert (
    dedup_key  text PRIMARY KEY,
    kind       text NOT NULL,
    first_at   timestamptz NOT NULL DEFAULT now(),
    last_at    timestamptz NOT NULL DEFAULT now(),
    seen       int NOT NULL DEFAULT 1,
    summary    text
);

-- Support look-ups at 400,000 households: contact name (NFKC, lower case, no spaces; exact or
-- prefix), phone (digits only), postal address (NFKC, lower case, no spaces; prefix).
CREATE INDEX household_contact_norm_idx ON household
    (lower(regexp_replace(normalize(contact_name, NFKC), '\s', '', 'g')) text_pattern_ops);
CREATE INDEX household_phone_digits_idx ON household (regexp_replace(phone, '\D', '', 'g'));
CREATE INDEX household_postal_norm_idx ON household
    (lower(regexp_replace(normalize(postal_address, NFKC), '\s', '', 'g')) text_pattern_ops);
