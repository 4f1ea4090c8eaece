-- 0008_transform_detail: what a declared transformation removed, so the proof can reverse it
-- exactly (issue #13, point 7).
--
-- message.transform_detail (jsonb, NULL for almost every row): for Transform.X_UIDL rows whose
-- source already carried X-UIDL header fields, {"removed": [[offset, "hex bytes"], ...]}: each
-- field the copier took out (offset in the source message, the exact bytes, CRLF and folded
-- lines included) before it prepended the one new `X-UIDL:` line. Source bytes = the appended
-- bytes minus the new line, with these bytes put back at these offsets.
ALTER TABLE message ADD COLUMN transform_detail jsonb
    CHECK (transform_detail IS NULL OR jsonb_typeof(transform_detail) = 'object');
