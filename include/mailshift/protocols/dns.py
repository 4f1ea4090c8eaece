"""DNS providers for the cutover: read the MX RRset, change it only under a prerequisite, and
watch every authoritative name server until it serves the change.

`DnsProvider` is the interface the cutover uses; `Rfc2136Provider` is the first implementation:
RFC 2136 UPDATE signed with TSIG (dnspython), sent over TCP to the primary, with a
value-dependent prerequisite (RFC 2136 2.4.2 "RRset exists, value dependent") naming the exact old
MX RRset. If the zone no longer holds exactly that RRset the server answers NXRRSET and changes
nothing: there is no blind overwrite.

Names are absolute or relative to nothing: pass `"example.jp"` or `"example.jp."`. Record data
is presentation text (`"10 mx-old.example.jp."`), compared after dnspython's canonical parsing,
so `"10 MX-OLD.example.jp."` equals `"10 mx-old.example.jp."`.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from mailshift import settings
from mailshift.errors import DnsError, NotServed, PrerequisiteMismatch  # noqa: F401  (raised here)


@dataclass(frozen=True)
class RRset:
    """One RRset as seen by one server: canonical rdata texts (sorted) and TTL."""

    rdatas: tuple[str, ...]
    ttl: int | None
    serial: int | None = None          # the zone's SOA serial in the same server's view

    def as_dict(self) -> dict:
        return {"rdata": list(self.rdatas), "ttl": self.ttl, "serial": self.serial}


@dataclass(frozen=True)
class NameServer:
    name: str          # NS target, absolute
    host: str          # address we query
    port: int

    @property
    def label(self) -> str:
        return f"{self.name}@{self.host}:{self.port}"


@dataclass
class ServedCheck:
    """Result of `wait_until_served`: every server's last answer and whether all match."""

    ok: bool
    answers: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0


class DnsProvider(Protocol):
    """What the cutover needs from a DNS provider."""

    name: str

    def get_rrset(self, zone: str, owner: str, rrtype: str = "MX") -> RRset: ...

    def replace_rrset(self, zone: str, owner: str, old: Iterable[str], new: Iterable[str], ttl: int,
                      rrtype: str = "MX") -> None: ...

    def authoritative_servers(self, zone: str) -> list[NameServer]: ...

    def query_server(self, server: NameServer, zone: str, owner: str, rrtype: str = "MX") -> RRset: ...

    def wait_until_served(self, zone: str, owner: str, rdatas: Iterable[str], *, ttl: int | None = None,
                          serial: int | None = None, rrtype: str = "MX", timeout: float = 60.0,
                          interval: float = 1.0) -> ServedCheck: ...


def _abs(name: str) -> dns.name.Name:
    return dns.name.from_text(name if name.endswith(".") else name + ".")


def canonical(rdatas: Iterable[str], rrtype: str = "MX", origin: str | None = None) -> tuple[str, ...]:
    """Sorted canonical texts (lower-case names, absolute) of presentation-format record data."""
    t = dns.rdatatype.from_text(rrtype)
    o = _abs(origin) if origin else dns.name.root
    out = []
    for r in rdatas:
        rd = dns.rdata.from_text(dns.rdataclass.IN, t, r, origin=o, relativize=False)
        out.append(rd.to_text().lower())
    return tuple(sorted(set(out)))


def serial_newer(a: int, b: int) -> bool:
    """RFC 1982 serial arithmetic: is `a` equal to or after `b`?"""
    return a == b or 0 < ((a - b) % (1 << 32)) < (1 << 31)


class Rfc2136Provider:
    """RFC 2136 UPDATE with TSIG to one primary; reads straight from the authoritative servers.

    `primary` is (host, port) of the server that takes updates. Authoritative servers are the
    zone's NS RRset; each NS name is resolved first from the primary (in-zone names) and else
    from the system resolver, and queried at `ns_port` (53 in production; the lab puts every
    server on its own port, so the port is configuration). `ns_addresses` overrides the address
    of named NS hosts ({"ns1.example.jp.": ("192.0.2.1", 53)}).
    """

    name = "rfc2136"

    def __init__(self, primary_host: str, primary_port: int, key_name: str, secret: str,
                 algorithm: str = "hmac-sha256", *, ns_port: int = 53,
                 ns_addresses: dict[str, tuple[str, int]] | None = None, timeout: float = 5.0):
        self.primary = (primary_host, int(primary_port))
        self.key_name = _abs(key_name)
        self.keyring = dns.tsigkeyring.from_text({key_name: secret})
        self.algorithm = dns.name.from_text(algorithm)
        self.ns_port = int(ns_port)
        self.ns_addresses = {str(_abs(k)).lower(): (h, int(p)) for k, (h, p) in (ns_addresses or {}).items()}
        self.timeout = timeout

    # -- construction from configuration -------------------------------------------------------
    @classmethod
    def from_connection(cls, doc: dict) -> Rfc2136Provider:
        """From an Airflow-style JSON connection: host, port, login (TSIG key name), password
        (base64 secret), extra {algorithm, ns_port, ns_addresses {name: "host:port"}, timeout}."""
        extra = doc.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra) if extra.strip() else {}
        port = int(doc.get("port") or 53)
        ns_addresses = {}
        for k, v in (extra.get("ns_addresses") or {}).items():
            h, _, p = str(v).rpartition(":")
            ns_addresses[k] = (h, int(p)) if h else (str(v), int(extra.get("ns_port", port)))
        return cls(doc["host"], port, doc["login"], doc["password"], extra.get("algorithm", "hmac-sha256"),
                   ns_port=int(extra.get("ns_port", port)), ns_addresses=ns_addresses,
                   timeout=float(extra.get("timeout", 5.0)))

    # -- low level ------------------------------------------------------------------------------
    def _query(self, host: str, port: int, qname: dns.name.Name, rdtype) -> dns.message.Message:
        q = dns.message.make_query(qname, rdtype)
        q.flags &= ~dns.flags.RD
        try:
            r = dns.query.udp(q, host, port=port, timeout=self.timeout)
            if r.flags & dns.flags.TC:
                r = dns.query.tcp(q, host, port=port, timeout=self.timeout)
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsError(f"query {qname} {dns.rdatatype.to_text(rdtype)} at {host}:{port} failed: {exc}") from exc
        return r

    def _rrset_at(self, host: str, port: int, zone: str, owner: str, rrtype: str) -> RRset:
        qname = _abs(owner)
        t = dns.rdatatype.from_text(rrtype)
        r = self._query(host, port, qname, t)
        if r.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise DnsError(f"{host}:{port} answered {dns.rcode.to_text(r.rcode())} for {qname} {rrtype}")
        if not r.flags & dns.flags.AA:
            raise DnsError(f"{host}:{port} is not authoritative for {zone} (no AA flag)")
        found = None
        for rr in r.answer:
            if rr.name == qname and rr.rdtype == t:
                found = rr
        serial = self._serial_at(host, port, zone)
        if found is None:
            return RRset((), None, serial)
        return RRset(tuple(sorted(rd.to_text().lower() for rd in found)), found.ttl, serial)

    def _serial_at(self, host: str, port: int, zone: str) -> int | None:
        r = self._query(host, port, _abs(zone), dns.rdatatype.SOA)
        for rr in r.answer:
            if rr.rdtype == dns.rdatatype.SOA:
                return int(rr[0].serial)
        return None

    # -- DnsProvider ----------------------------------------------------------------------------
    def get_rrset(self, zone: str, owner: str, rrtype: str = "MX") -> RRset:
        """The RRset as the primary serves it now (authoritative answer, no cache)."""
        return self._rrset_at(*self.primary, zone, owner, rrtype)

    def serial(self, zone: str) -> int | None:
        return self._serial_at(*self.primary, zone)

    def replace_rrset(self, zone: str, owner: str, old: Iterable[str], new: Iterable[str], ttl: int,
                      rrtype: str = "MX") -> None:
        """Atomically replace `owner`'s RRset by `new` (TTL `ttl`) if and only if it is exactly `old`.

        Raises PrerequisiteMismatch (server said NXRRSET/NXDOMAIN: nothing written) or DnsError."""
        t = dns.rdatatype.from_text(rrtype)
        z = _abs(zone)
        qname = _abs(owner)
        old, new = list(old), list(new)
        if not new:
            raise ValueError("the new RRset is empty")
        old_rs = dns.rdataset.Rdataset(dns.rdataclass.IN, t)
        for text in old:
            old_rs.add(dns.rdata.from_text(dns.rdataclass.IN, t, text, origin=z, relativize=False))
        upd = dns.update.UpdateMessage(z, keyring=self.keyring, keyname=self.key_name,
                                       keyalgorithm=self.algorithm)
        if old:
            upd.present(qname, old_rs)       # value-dependent: exactly these records
        else:
            upd.absent(qname, t)             # expected none: there must be none
        upd.delete(qname, t)
        for text in new:
            upd.add(qname, ttl, dns.rdata.from_text(dns.rdataclass.IN, t, text, origin=z, relativize=False))
        try:
            r = dns.query.tcp(upd, self.primary[0], port=self.primary[1], timeout=self.timeout)
        except (dns.exception.DNSException, OSError) as exc:
            # we do not know whether it was applied: the caller re-reads the zone
            raise DnsError(f"UPDATE to {self.primary[0]}:{self.primary[1]} failed: {exc}") from exc
        rc = r.rcode()
        if rc in (dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN):
            found = None
            try:
                found = list(self.get_rrset(zone, owner, rrtype).rdatas)
            except DnsError:
                pass
            raise PrerequisiteMismatch(str(qname), list(canonical(old, rrtype, zone)), found,
                                       f"server answered {dns.rcode.to_text(rc)}")
        if rc != dns.rcode.NOERROR:
            raise DnsError(f"UPDATE of {qname} {rrtype} refused: {dns.rcode.to_text(rc)}")

    def authoritative_servers(self, zone: str) -> list[NameServer]:
        """The zone's NS RRset (as the primary serves it), each resolved to an address."""
        z = _abs(zone)
        r = self._query(*self.primary, z, dns.rdatatype.NS)
        names = sorted({str(rd.target).lower() for rr in r.answer if rr.rdtype == dns.rdatatype.NS for rd in rr})
        if not names:
            raise DnsError(f"{zone} has no NS RRset at the primary {self.primary[0]}:{self.primary[1]}")
        out = []
        for n in names:
            if n in self.ns_addresses:
                h, p = self.ns_addresses[n]
                out.append(NameServer(n, h, p))
                continue
            addrs = []
            if dns.name.from_text(n).is_subdomain(z):
                rr = self._query(*self.primary, dns.name.from_text(n), dns.rdatatype.A)
                addrs = [rd.address for a in rr.answer if a.rdtype == dns.rdatatype.A for rd in a]
            if not addrs:
                try:
                    addrs = sorted({ai[4][0] for ai in socket.getaddrinfo(n.rstrip("."), None, socket.AF_INET)})
                except OSError as exc:
                    raise DnsError(f"cannot resolve name server {n}: {exc}") from exc
            out.extend(NameServer(n, a, self.ns_port) for a in sorted(addrs))
        return out

    def query_server(self, server: NameServer, zone: str, owner: str, rrtype: str = "MX") -> RRset:
        return self._rrset_at(server.host, server.port, zone, owner, rrtype)

    def wait_until_served(self, zone: str, owner: str, rdatas: Iterable[str], *, ttl: int | None = None,
                          serial: int | None = None, rrtype: str = "MX", timeout: float = 60.0,
                          interval: float = 1.0) -> ServedCheck:
        return wait_until_served(self, zone, owner, rdatas, ttl=ttl, serial=serial, rrtype=rrtype,
                                 timeout=timeout, interval=interval)


def served_matches(seen: RRset, want: tuple[str, ...], ttl: int | None, serial: int | None,
                   ttl_at_most: bool = False) -> bool:
    if seen.rdatas != want:
        return False
    if ttl is not None and seen.ttl is not None and (seen.ttl > ttl if ttl_at_most else seen.ttl != ttl):
        return False
    if serial is not None and (seen.serial is None or not serial_newer(seen.serial, serial)):
        return False
    return True


def wait_until_served(provider: DnsProvider, zone: str, owner: str, rdatas: Iterable[str], *,
                      ttl: int | None = None, serial: int | None = None, rrtype: str = "MX",
                      timeout: float = 60.0, interval: float = 1.0, ttl_at_most: bool = False,
                      clock=time.monotonic, sleep=time.sleep) -> ServedCheck:
    """Query every authoritative server directly until all serve `rdatas` (and `ttl`, and a SOA
    serial at or after `serial`). Raises NotServed naming each lagging server after `timeout`."""
    want = canonical(rdatas, rrtype, zone)
    started = clock()
    servers = provider.authoritative_servers(zone)
    answers: dict[str, dict] = {}
    while True:
        pending = []
        for s in servers:
            try:
                seen = provider.query_server(s, zone, owner, rrtype)
                answers[s.label] = seen.as_dict()
                if not served_matches(seen, want, ttl, serial, ttl_at_most):
                    pending.append(s.label)
            except DnsError as exc:
                answers[s.label] = {"error": str(exc)}
                pending.append(s.label)
        if not pending:
            return ServedCheck(True, answers, clock() - started)
        if clock() - started >= timeout:
            raise NotServed(f"after {timeout:.0f} s these authoritative servers of {zone} do not serve "
                            f"{list(want)} (TTL {ttl}, serial >= {serial}): "
                            + "; ".join(f"{p}: {answers[p]}" for p in pending), answers)
        sleep(interval)


def provider_from_env(conn_id: str = "mailshift_dns") -> Rfc2136Provider:
    """The provider from AIRFLOW_CONN_<CONN_ID> (JSON form), as for the IMAP endpoints."""
    var, value = settings.connection_value(conn_id)
    if not isinstance(value, dict):
        raise DnsError(f"{var} must be the JSON form of the connection (host, port, extra: zone, TSIG key)")
    return Rfc2136Provider.from_connection(value)
