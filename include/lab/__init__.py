"""mailshift local lab: private PostgreSQL, source and destination Dovecot, BIND9 and a Slack
Web API stand-in on 127.0.0.1. Start with `python -m lab up`; read with `LabConfig.load()`."""
from .config import LabConfig, LabNotConfigured, ServerInfo

__all__ = ["LabConfig", "LabNotConfigured", "ServerInfo"]
