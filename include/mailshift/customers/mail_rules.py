"""Forwarding, alias and auto-reply rules per mailbox, from exports, and the post-migration
comparison with the destination's rules. Pure logic: reads export directories, no database
(`mailshift.customers.audit.run_rules_audit` stores the rules and findings).

Export layout (the same for the legacy side and the destination side):
    EXPORT_DIR/<address or source login>/
        *.sieve, .dovecot.sieve   Sieve scripts (RFC 5228 + redirect :copy RFC 3894, vacation
                                  RFC 5230): redirect, vacation, keep, discard, fileinto
        .forward                  sendmail/Postfix: one target per line or comma-separated;
                                  `\\user` = keep a local copy, `|cmd` = program, `/path` = file
        .qmail, .qmail-<ext>      qmail: `&addr` or `addr` forward, `./Maildir/` keep, `|cmd`
A rule is (kind, target, copy, conditional, origin). Kinds: `forward`, `autoreply`, `program`,
`keep`, `discard`, `fileinto`, `file`. Only `forward`, `autoreply` and `program` deliver
somewhere else; they are compared: every source rule without an equivalent destination rule
(same kind and target, a forward that kept a copy must still keep one) is a finding that the
mail it delivered would stop (`rule_forward_lost`, `rule_autoreply_lost`, `rule_program_lost`,
`rule_copy_lost`). A `program` rule never has an equivalent at the new provider.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DELIVERING = ("forward", "autoreply", "program")


@dataclass(frozen=True)
class Rule:
    kind: str
    target: str = ""
    copy: bool = False          # forward that keeps a copy in the mailbox (:copy, \user, ./Maildir/)
    conditional: bool = False   # inside an if/elsif/else block
    origin: str = ""            # file:line
    detail: str = ""

    def key(self) -> tuple[str, str]:
        return (self.kind, self.target.lower())


# -- Sieve --------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r'(?P<ws>\s+)|(?P<hash>#[^\n]*)|(?P<cmt>/\*.*?\*/)'
    r'|(?P<text>text:[ \t]*(?:#[^\n]*)?\r?\n(?P<body>.*?)\r?\n\.\r?\n)'
    r'|(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>\d+[KMG]?)|(?P<tag>:[A-Za-z_][A-Za-z0-9_]*)'
    r'|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[;{}\[\](),])', re.S)


def _tokens(text: str):
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"line {line}: unexpected {text[pos:pos + 20]!r}")
        kind = m.lastgroup if m.lastgroup != "body" else "text"
        val = m.group(0)
        if kind == "str":
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        elif kind == "text":
            val = m.group("body")
        if kind not in ("ws", "hash", "cmt"):
            yield kind, val, line
        line += m.group(0).count("\n")
        pos = m.end()


def parse_sieve(text: str, origin: str = "sieve") -> list[Rule]:
    toks = list(_tokens(text))
    rules: list[Rule] = []
    depth = 0
    i = 0
    start = True
    while i < len(toks):
        kind, val, line = toks[i]
        if kind == "punct":
            if val == "{":
                depth += 1
                start = True
            elif val == "}":
                depth -= 1
                start = True
            elif val == ";":
                start = True
            i += 1
            continue
        if kind == "id" and start:
            start = False
            cmd = val.lower()
            # the statement's arguments up to ; or {
            j = i + 1
            args = []
            while j < len(toks) and not (toks[j][0] == "punct" and toks[j][1] in ";{"):
                args.append(toks[j])
                j += 1
            where = f"{origin}:{line}"
            cond = depth > 0
            tags = [a[1].lower() for a in args if a[0] == "tag"]
            strings = [a[1] for a in args if a[0] in ("str", "text")]
            if cmd == "redirect" and strings:
                rules.append(Rule("forward", strings[-1].strip(), ":copy" in tags, cond, where))
            elif cmd == "vacation":
                subj = ""
                for k in range(len(args) - 1):
                    if args[k][0] == "tag" and args[k][1].lower() == ":subject":
                        subj = args[k + 1][1]
                reason = strings[-1] if strings else ""
                rules.append(Rule("autoreply", "", False, cond, where,
                                  (subj + " | " if subj else "") + reason[:200]))
            elif cmd == "keep":
                rules.append(Rule("keep", "", False, cond, where))
            elif cmd == "discard":
                rules.append(Rule("discard", "", False, cond, where))
            elif cmd == "fileinto" and strings:
                rules.append(Rule("fileinto", strings[-1], ":copy" in tags, cond, where))
            elif cmd in ("pipe", "execute"):  # vnd.dovecot.pipe / execute
                rules.append(Rule("program", strings[0] if strings else "", ":copy" in tags,
                                  cond, where))
            i = j
            continue
        start = False
        i += 1
    return rules


# -- .forward / .qmail ------------------------------------------------------------------------
def _split_forward(line: str) -> list[str]:
    out, cur, q = [], "", False
    for c in line:
        if c == '"':
            q = not q
            cur += c
        elif c == "," and not q:
            out.append(cur.strip())
            cur = ""
        else:
            cur += c
    out.append(cur.strip())
    return [x.strip('"') if x.startswith('"|') else x for x in out if x]


def parse_forward(text: str, login: str, origin: str = ".forward") -> list[Rule]:
    rules: list[Rule] = []
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entries += [(n, e) for e in _split_forward(line)]
    keep = any(e.lstrip("\\").lower() == login.lower() for _, e in entries)
    for n, e in entries:
        where = f"{origin}:{n}"
        if e.lstrip("\\").lower() == login.lower():
            rules.append(Rule("keep", "", False, False, where))
        elif e.startswith("|"):
            rules.append(Rule("program", e[1:].strip(), keep, False, where))
        elif e.startswith("/"):
            rules.append(Rule("file", e, keep, False, where))
        else:
            rules.append(Rule("forward", e, keep, False, where))
    return rules


def parse_qmail(text: str, origin: str = ".qmail") -> list[Rule]:
    rules: list[Rule] = []
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1)
             if ln.strip() and not ln.lstrip().startswith("#")]
    keep = any(ln.startswith(("./", "/")) for _, ln in lines)
    for n, ln in lines:
        where = f"{origin}:{n}"
        if ln.startswith("|"):
            rules.append(Rule("program", ln[1:].strip(), keep, False, where))
        elif ln.startswith(("./", "/")):
            rules.append(Rule("keep", "", False, False, where, ln))
        else:
            rules.append(Rule("forward", ln.lstrip("&"), keep, False, where))
    return rules


def read_rules_dir(d: Path, login: str) -> tuple[list[Rule], list[str]]:
    """Rules of one mailbox export directory; (rules, problems)."""
    rules: list[Rule] = []
    problems: list[str] = []
    for f in sorted(d.iterdir()):
        if not f.is_file():
            continue
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            problems.append(f"{f}: {exc}")
            continue
        origin = f"{d.name}/{f.name}"
        try:
            if f.suffix == ".sieve":
                rules += parse_sieve(text, origin)
            elif f.name == ".forward":
                rules += parse_forward(text, login, origin)
            elif f.name == ".qmail" or f.name.startswith(".qmail-"):
                rules += parse_qmail(text, origin)
        except ValueError as exc:
            problems.append(f"{origin}: cannot parse: {exc}")
    return rules, problems


def read_export(export_dir: str | Path) -> tuple[dict[str, list[Rule]], list[str]]:
    """{directory name (address or login, lower case): rules} for every mailbox directory."""
    out: dict[str, list[Rule]] = {}
    problems: list[str] = []
    for d in sorted(Path(export_dir).iterdir()):
        if d.is_dir():
            login = d.name.split("@", 1)[0]
            rules, probs = read_rules_dir(d, login)
            out[d.name.lower()] = rules
            problems += probs
    return out, problems


def compare(source: list[Rule], dest: list[Rule]) -> list[tuple[str, str, Rule]]:
    """(finding kind, detail, source rule) for every source rule that would stop delivering."""
    dest_keys = {r.key(): r for r in dest if r.kind in DELIVERING}
    out = []
    for r in source:
        if r.kind not in DELIVERING:
            continue
        if r.kind == "program":
            out.append(("rule_program_lost", f"pipe to program {r.target!r} ({r.origin}) is not "
                        "offered by the new provider", r))
            continue
        if r.kind == "autoreply":
            if not any(k[0] == "autoreply" for k in dest_keys):
                out.append(("rule_autoreply_lost", f"auto-reply ({r.origin}) {r.detail[:80]!r} "
                            "has no destination auto-reply", r))
            continue
        d = dest_keys.get(r.key())
        if d is None:
            out.append(("rule_forward_lost", f"forward to {r.target} ({r.origin}) has no "
                        "destination rule", r))
        elif r.copy and not d.copy:
            out.append(("rule_copy_lost", f"forward to {r.target} kept a copy at the source "
                        f"({r.origin}); the destination rule does not", r))
    return out
