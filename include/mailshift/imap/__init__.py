"""IMAP side of mailshift: endpoints, sessions, folder mapping and the copier."""
