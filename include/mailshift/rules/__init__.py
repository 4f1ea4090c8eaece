"""The decisions: the state vocabulary, waiver coverage and the proof state of a mailbox,
building or domain. Gate, waves, UI, CLI, Slack and reports all ask here."""
