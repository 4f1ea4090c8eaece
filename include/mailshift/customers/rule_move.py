"""Legacy forwarding and auto-reply rules moved to the destination, not only compared.

Per mailbox of a rules export (`mail_rules` layout: <dir>/<address or login>/{*.sieve,
.dovecot.sieve, .forward, .qmail, .qmail-<ext>}), the translation (pure, `translate`):
- a Sieve script whose `require`d extensions the destination offers and that pipes to no
  program is installed as it is (`legacy-<name>`), included from the main script;
- otherwise its unconditional redirect / vacation / keep / discard / fileinto rules are
  translated; a conditional rule there cannot be (`not movable`);
- `.forward`: `addr` -> `redirect "addr";`, with `\\login` -> `redirect :copy "addr";`;
- `.qmail`: `&addr` / `addr` -> redirect (`:copy` when `./Maildir/` delivers too);
- programs (`|cmd`), files (`/path`) and `.qmail-<ext>` (extension addresses) cannot move.
The main script `mailshift-migrated` (include + the translated rules) is installed and made
active over ManageSieve (`protocols.managesieve`); the active script and what it includes are
read back and compared with the source (`audit.run_rules_audit`): what was moved must compare
equal; what could not move is a finding (`rule_program_lost`, `rule_not_movable`) that puts
the customer on the notice list.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mailshift.customers import mail_rules as rules_mod
from mailshift.customers.mail_rules import Rule

MAIN = "mailshift-migrated"
_REQUIRE = re.compile(r'require\s+(\[[^\]]*\]|"[^"]*")\s*;', re.I)
_INCLUDE = re.compile(r'include\s+(?::personal\s+)?"([^"]+)"\s*;', re.I)


@dataclass
class Translation:
    scripts: dict[str, str] = field(default_factory=dict)   # legacy scripts installed as they are
    lines: list[str] = field(default_factory=list)           # translated statements of MAIN
    requires: set[str] = field(default_factory=set)
    not_movable: list[tuple[Rule, str]] = field(default_factory=list)

    def main(self) -> str:
        req = sorted(self.requires | ({"include"} if self.scripts else set()))
        head = [f"require [{', '.join(_q(r) for r in req)}];"] if req else []
        inc = [f"include :personal {_q(n)};" for n in sorted(self.scripts)]
        return "\n".join(["# moved from the legacy server by mailshift"] + head + inc
                         + self.lines) + "\n"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def required(text: str) -> set[str]:
    out: set[str] = set()
    for m in _REQUIRE.finditer(text):
        out |= {x.lower() for x in re.findall(r'"([^"]*)"', m.group(1))}
    return out


def _statement(r: Rule, t: Translation) -> None:
    """One parsed rule as Sieve in MAIN, or why it cannot move."""
    if r.kind == "forward":
        if r.copy:
            t.requires.add("copy")
        t.lines.append(f"redirect {':copy ' if r.copy else ''}{_q(r.target)};")
    elif r.kind == "autoreply":
        t.requires.add("vacation")
        t.lines.append(f"vacation {_q(r.detail.split(' | ', 1)[-1] or 'away')};")
    elif r.kind in ("keep", "discard"):
        t.lines.append(f"{r.kind};")
    elif r.kind == "fileinto":
        t.requires.add("fileinto")
        t.lines.append(f"fileinto {_q(r.target)};")
    elif r.kind == "program":
        t.not_movable.append((r, f"pipe to program {r.target!r}: the new service runs no programs"))
    else:
        t.not_movable.append((r, f"delivery to the file {r.target!r} is not possible at the new service"))


def _sieve(f: Path, origin: str, text: str, exts: set[str], t: Translation) -> None:
    rules = rules_mod.parse_sieve(text, origin)
    missing = required(text) - exts
    if not missing and not any(r.kind == "program" for r in rules):
        t.scripts["legacy-" + re.sub(r"[^A-Za-z0-9_-]", "_", f.name.lstrip(".").rsplit(".", 1)[0])] = text
        return
    why = f"uses {', '.join(sorted(missing))}" if missing else "pipes to a program"
    for r in rules:
        if r.conditional and r.kind != "program":
            t.not_movable.append((r, f"conditional rule in a script that {why}"))
        else:
            _statement(r, t)


def translate(d: Path, login: str, exts: set[str]) -> Translation:
    """The destination scripts of one mailbox export directory (see the module text)."""
    t = Translation()
    for f in sorted(p for p in d.iterdir() if p.is_file()):
        text = f.read_text(encoding="utf-8", errors="replace")
        origin = f"{d.name}/{f.name}"
        if f.suffix == ".sieve":
            _sieve(f, origin, text, exts, t)
            continue
        if f.name == ".forward":
            rules = rules_mod.parse_forward(text, login, origin)
        elif f.name == ".qmail":
            rules = rules_mod.parse_qmail(text, origin)
        elif f.name.startswith(".qmail-"):
            t.not_movable += [(r, f"rule of the extension address {login}-{f.name[7:]}")
                              for r in rules_mod.parse_qmail(text, origin) if r.kind != "keep"]
            continue
        else:
            continue
        for r in rules:
            if r.kind != "keep":
                _statement(r, t)
    return t


def included(text: str) -> list[str]:
    """The personal scripts a script includes."""
    return _INCLUDE.findall(text)
