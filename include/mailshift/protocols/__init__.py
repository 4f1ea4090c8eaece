"""Protocols: IMAP and POP3 sessions, endpoints (connection URIs), folder mapping and the
DNS provider (RFC 2136). No SQL, no migration rules."""
