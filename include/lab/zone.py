"""Direct edits of the lab zone (a lab administrator's action, not a mailshift one)."""

from __future__ import annotations

import dns.query
import dns.rcode
import dns.resolver
import dns.update

from .config import LabConfig

ORIGINAL_MX = "10 mx-old.{zone}."


def set_mx(cfg: LabConfig, rdatas: list[str], ttl: int) -> None:
    """Replace the zone's MX RRset unconditionally (TSIG-signed RFC 2136 UPDATE)."""
    upd = dns.update.UpdateMessage(cfg.dns_zone, keyring=cfg.tsig_keyring(), keyname=cfg.tsig_key_name,
                                   keyalgorithm=cfg.tsig_algorithm)
    upd.replace(cfg.dns_zone + ".", ttl, "MX", *rdatas)
    r = dns.query.tcp(upd, cfg.dns_host, port=cfg.dns_port, timeout=5)
    if r.rcode() != dns.rcode.NOERROR:
        raise RuntimeError(f"lab zone update refused: {dns.rcode.to_text(r.rcode())}")


def reset_mx(cfg: LabConfig, ttl: int = 3600) -> None:
    set_mx(cfg, [ORIGINAL_MX.format(zone=cfg.dns_zone)], ttl)


def current_mx(cfg: LabConfig) -> tuple[list[str], int]:
    """The MX RRset as the lab's authoritative server answers it: (records, ttl)."""
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [cfg.dns_host]
    res.port = cfg.dns_port
    ans = res.resolve(cfg.dns_zone, "MX")
    return sorted(r.to_text() for r in ans), ans.rrset.ttl
