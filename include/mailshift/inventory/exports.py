"""Legacy inventory export formats (one CSV format per legacy system kind).

Each source system in systems.yaml names its `export_format`; its export is the file
`<system_id>.csv` in the export directory. Both formats map to the same canonical `ExportRow`.

Format "alpha" (src-a style; UTF-8, a UTF-8 BOM is tolerated, LF or CRLF line ends, minimal
quoting). Header, exactly these names, any order, extra columns ignored:

    building_id,building_name,domain,household_id,contact_name,address,login,protocol,quota_mb

    - household_id: the contract id, e.g. "B10001-101" (building id + "-" + room)
    - protocol: "imap" or "pop3" (case-insensitive)
    - quota_mb: integer MB, empty = no quota
    - no phone / postal address columns (alpha never exported them)

Format "beta" (src-b style; Shift_JIS as Windows writes it, i.e. cp932 with the NEC/IBM
extensions such as "①", CRLF line ends, every field double-quoted, Japanese headers):

    "ユーザID","メールアドレス","プロトコル","容量(MB)","契約者名","電話番号","住所","部屋番号","物件コード","物件名","ドメイン"

    - ユーザID = login; メールアドレス = address
    - プロトコル: "IMAP4" or "POP3" (case-insensitive; "IMAP" accepted)
    - 容量(MB): integer MB, "無制限" or empty = no quota; full-width digits are accepted
    - household_id = 物件コード + "-" + 部屋番号 (beta has no household id column)

Parsing reports problems as `Issue`s (file, line, field, problem, record) rather than raising,
so the loader can list every error at once. Cross-record checks live in `load.py`.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import unicodedata
from dataclasses import dataclass, fields

CANONICAL = ("building_id", "building_name", "domain", "household_id", "room", "contact_name",
             "phone", "postal_address", "address", "login", "protocol", "quota_mb")


@dataclass
class ExportRow:
    building_id: str
    building_name: str
    domain: str
    household_id: str
    contact_name: str
    address: str
    login: str
    protocol: str  # canonical: imap | pop3
    quota_mb: int | None
    room: str | None = None
    phone: str | None = None
    postal_address: str | None = None
    dest_login: str | None = None   # optional column: the provider's login when it is not the address
    file: str = ""
    line: int = 0

    def record(self) -> str:
        return f"household {self.household_id or '?'}, address {self.address or '?'}"


@dataclass(frozen=True)
class Issue:
    file: str
    line: int
    field: str
    problem: str
    record: str = ""

    def __str__(self) -> str:
        rec = f" [{self.record}]" if self.record else ""
        return f"{self.file}:{self.line}: {self.field}: {self.problem}{rec}"


@dataclass(frozen=True)
class Format:
    name: str
    encoding: str
    header: tuple  # file column names in written order
    column_of: dict  # canonical field -> file column name
    required: tuple  # file column names that must be present in the header
    line_terminator: str
    quote_all: bool


ALPHA = Format(
    "alpha", "utf-8",
    ("building_id", "building_name", "domain", "household_id", "contact_name", "address", "login",
     "protocol", "quota_mb"),
    {f: f for f in ("building_id", "building_name", "domain", "household_id", "contact_name",
                    "address", "login", "protocol", "quota_mb", "dest_login")},
    ("building_id", "building_name", "domain", "household_id", "contact_name", "address", "login",
     "protocol", "quota_mb"),
    "\n", False)

BETA = Format(
    "beta", "cp932",
    ("ユーザID", "メールアドレス", "プロトコル", "容量(MB)", "契約者名", "電話番号", "住所", "部屋番号",
     "物件コード", "物件名", "ドメイン"),
    {"login": "ユーザID", "address": "メールアドレス", "protocol": "プロトコル", "quota_mb": "容量(MB)",
     "contact_name": "契約者名", "phone": "電話番号", "postal_address": "住所", "room": "部屋番号",
     "building_id": "物件コード", "building_name": "物件名", "domain": "ドメイン", "dest_login": "新ログインID"},
    ("ユーザID", "メールアドレス", "プロトコル", "容量(MB)", "契約者名", "部屋番号", "物件コード",
     "物件名", "ドメイン"),
    "\r\n", True)

FORMATS = {"alpha": ALPHA, "beta": BETA}
#: encodings a system's export may declare in systems.yaml (`encoding`, default: the format's)
ENCODINGS = ("utf-8", "cp932", "shift_jis", "euc-jp")
UNLIMITED = {"", "無制限", "unlimited", "-"}


# ---------------------------------------------------------------------------------------------
# writing (used by the lab corpus generator)


def render(format_name: str, rows: list[ExportRow]) -> bytes:
    """Rows as the legacy system would export them (the lab's corpus writes its fixtures so)."""
    fmt = FORMATS[format_name]
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator=fmt.line_terminator,
                   quoting=csv.QUOTE_ALL if fmt.quote_all else csv.QUOTE_MINIMAL)
    w.writerow(fmt.header)
    inv_map = {v: k for k, v in fmt.column_of.items()}
    for r in rows:
        out = []
        for col in fmt.header:
            f = inv_map[col]
            v = getattr(r, f)
            if fmt is BETA and f == "protocol":
                v = {"imap": "IMAP4", "pop3": "POP3"}[v]
            elif fmt is BETA and f == "quota_mb" and v is None:
                v = "無制限"
            elif fmt is BETA and f == "room":
                v = r.room if r.room is not None else r.household_id.rsplit("-", 1)[-1]
            out.append("" if v is None else str(v))
        w.writerow(out)
    return buf.getvalue().encode(fmt.encoding)


# ---------------------------------------------------------------------------------------------
# parsing


def _decode_lines(data: bytes, fmt: Format, fname: str, issues: list[Issue]) -> tuple[str, set[int]]:
    """Decode line by line; undecodable lines become issues (field named when possible)."""
    enc = "utf-8-sig" if fmt.encoding == "utf-8" else fmt.encoding
    try:
        return data.decode(enc), set()
    except UnicodeDecodeError:
        pass
    bad: set[int] = set()
    out: list[str] = []
    raw_lines = data.split(b"\n")
    header_cols: list[str] | None = None
    for n, raw in enumerate(raw_lines, start=1):
        e = enc if n == 1 else fmt.encoding
        try:
            text = raw.decode(e)
        except UnicodeDecodeError as exc:
            bad.add(n)
            # ',' (0x2C) is never part of a multi-byte char in UTF-8 or cp932: split the bytes
            field = "-"
            pos = 0
            for i, part in enumerate(raw.split(b",")):
                if pos <= exc.start < pos + len(part) + 1:
                    if header_cols and i < len(header_cols):
                        field = _canonical_name(fmt, header_cols[i])
                    break
                pos += len(part) + 1
            issues.append(Issue(fname, n, field,
                                f"undecodable bytes for {fmt.encoding} at byte {exc.start} "
                                f"({raw[exc.start:exc.start + 4].hex()})"))
            text = raw.decode(e, errors="replace")
        if n == 1:
            header_cols = next(csv.reader([text.rstrip("\r")]), [])
        out.append(text)
    return "\n".join(out), bad


def _canonical_name(fmt: Format, col: str) -> str:
    for k, v in fmt.column_of.items():
        if v == col:
            return k
    return col


def _nfkc_int(v: str) -> int:
    return int(unicodedata.normalize("NFKC", v).replace(",", "").strip())


def _fits(data: bytes, fmt: Format, encoding: str) -> bool:
    """The bytes decode in `encoding` and the header then names the format's columns."""
    try:
        text = data.decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except UnicodeDecodeError:
        return False
    header = [h.strip() for h in next(csv.reader([text.split("\n", 1)[0].rstrip("\r")]), [])]
    return all(c in header for c in fmt.required)


def likely_encoding(data: bytes, fmt: Format) -> str | None:
    """The first of ENCODINGS in which the whole file decodes with the format's header."""
    return next((e for e in ENCODINGS if _fits(data, fmt, e)), None)


def _wrong_encoding(data: bytes, fmt: Format, enc: str, fname: str, issues: list[Issue]) -> bool:
    """True (one issue recorded) when the file does not fit `enc` but plainly fits another."""
    if _fits(data, fmt, enc):
        return False
    likely = likely_encoding(data, fmt)
    if likely is None or likely == enc:
        return False
    issues.append(Issue(fname, 1, "encoding", f"the file is in {likely}, not {enc}: set "
                        f"`encoding: {likely}` for this system in systems.yaml or save the "
                        f"file as {enc}"))
    return True


def parse(format_name: str, data: bytes, fname: str, issues: list[Issue],
          encoding: str | None = None) -> list[ExportRow]:
    """Parse one export file; append problems to `issues`; return the rows that parsed.
    `encoding` (systems.yaml) overrides the format's; a file that is plainly in another
    encoding is one issue naming it, not one per garbled line."""
    fmt = FORMATS[format_name]
    enc = encoding or fmt.encoding
    if _wrong_encoding(data, fmt, enc, fname, issues):
        return []
    text, bad_lines = _decode_lines(data, dataclasses.replace(fmt, encoding=enc), fname, issues)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        issues.append(Issue(fname, 1, "-", "empty file (no header)"))
        return []
    header = [h.strip() for h in header]
    missing = [c for c in fmt.required if c not in header]
    for c in missing:
        issues.append(Issue(fname, 1, _canonical_name(fmt, c), f"missing column {c!r} in header"))
    if missing:
        return []
    idx = {c: header.index(c) for c in header}
    rows: list[ExportRow] = []
    prev_end = reader.line_num
    for rec in reader:
        line = prev_end + 1
        prev_end = reader.line_num
        if not any(v.strip() for v in rec):
            continue  # blank line
        if line in bad_lines:
            continue
        if len(rec) != len(header):
            issues.append(Issue(fname, line, "-", f"{len(rec)} fields, header has {len(header)}"))
            continue
        v = {f: rec[idx[col]] if col in idx else None for f, col in fmt.column_of.items()}
        record = f"household {v.get('household_id') or (v.get('building_id') or '?') + '-' + (v.get('room') or '?')}, address {v.get('address') or '?'}"
        # protocol
        proto_raw = (v.get("protocol") or "").strip()
        proto = {"imap": "imap", "imap4": "imap", "pop3": "pop3", "pop": "pop3"}.get(proto_raw.lower())
        if proto is None:
            issues.append(Issue(fname, line, "protocol",
                                f"unknown protocol {proto_raw!r} (expected imap or pop3)", record))
        # quota
        quota_raw = (v.get("quota_mb") or "").strip()
        quota: int | None = None
        if quota_raw.lower() not in UNLIMITED:
            try:
                quota = _nfkc_int(quota_raw)
                if quota < 0:
                    raise ValueError
            except ValueError:
                issues.append(Issue(fname, line, "quota_mb",
                                    f"not a non-negative whole number of MB: {quota_raw!r}", record))
        hid = v.get("household_id")
        room = v.get("room")
        if fmt is BETA:
            b, r = (v.get("building_id") or "").strip(), (room or "").strip()
            hid = f"{b}-{r}" if b and r else ""
        row = ExportRow(
            building_id=(v.get("building_id") or "").strip(),
            building_name=(v.get("building_name") or "").strip(),
            domain=(v.get("domain") or "").strip(),
            household_id=(hid or "").strip(),
            contact_name=(v.get("contact_name") or "").strip(),
            address=v.get("address") or "",  # NOT stripped: whitespace is an error, checked later
            login=v.get("login") or "",
            protocol=proto or proto_raw,
            quota_mb=quota,
            room=(room.strip() if room else None) or (hid.rsplit("-", 1)[-1] if hid and "-" in hid else None),
            phone=(v.get("phone") or "").strip() or None,
            postal_address=(v.get("postal_address") or "").strip() or None,
            dest_login=(v.get("dest_login") or "").strip() or None,
            file=fname, line=line)
        if proto is None:
            row.protocol = ""
        rows.append(row)
    return rows


__all__ = ["ExportRow", "Issue", "Format", "FORMATS", "ALPHA", "BETA", "render", "parse",
           "CANONICAL", "fields"]
