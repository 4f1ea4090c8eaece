"""IMAP: sessions (TLS, login, identity), MULTIAPPEND in order, folder-name mapping."""
