"""Notify: every Slack message mailshift sends, built in one place and sent by one notifier."""
