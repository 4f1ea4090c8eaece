"""Copying: the exactly-once IMAP/POP3 copier, its append lanes, one mailbox's pass
(`copy_one`) and the preflight before a building is copied."""
