-- 0008_copy_checks: what the copier checks and records at copy time (issue #13).
--
-- 1. message.transform_detail (jsonb, NULL for almost every row): for Transform.X_UIDL rows
--    whose source already carried X-UIDL header fields, {"removed": [[offset, "hex bytes"], ...]}:
--    each field the copier took out (offset in the source message, the exact bytes, line breaks
--    and folded lines included) before it prepended the one new `X-UIDL:` line. Source bytes =
--    the appended bytes minus the new line, with these bytes put back at these offsets.
ALTER TABLE message ADD COLUMN transform_detail jsonb
    CHECK (transform_detail IS NULL OR jsonb_typeof(transform_detail) = 'object');

-- 2. state 5 `altered`: the destination said OK and assigned a UID, but the message it stores
--    (fetched back at copy time) is not the bytes that were appended. `dest_uid` is the stored
--    copy; `detail` carries the class and the byte-level evidence:
--    "<class>: stored <n> bytes sha256 <hex>, appended <m> bytes; first difference at byte <k>:
--    appended <hex> stored <hex>". Classes: line_endings, header_bytes_replaced, truncated, other.
--    Not settled: it blocks the proof unless the building spec accepts that class by name.
INSERT INTO message_state (code, name, settled, description) VALUES
    (5, 'altered', false, 'stored at the destination but not byte-identical; class and evidence in detail');
ALTER TABLE message DROP CONSTRAINT message_state_check;
ALTER TABLE message ADD CONSTRAINT message_state_check CHECK (state BETWEEN 0 AND 5);
ALTER TABLE message DROP CONSTRAINT message_reason;
ALTER TABLE message ADD CONSTRAINT message_reason
    CHECK (state NOT IN (2, 3, 5) OR (detail IS NOT NULL AND detail <> ''));
