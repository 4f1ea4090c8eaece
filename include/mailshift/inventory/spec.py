"""Per-building spec: JSON Schema, built-in defaults, merge, validation with file:line.

A building's effective spec = built-in DEFAULT_SPEC <- optional `defaults.yaml` of the export
directory <- `buildings/<building_id>.yaml` (deep merge for mappings; lists and scalars replace).
Override files are partial specs; unknown keys anywhere are errors.

Keys:
- size_limit_bytes: int > 0. Largest message the destination accepts (default 25 MiB).
- folder_map: {source folder name ("/"-separated, as the customer sees it) -> destination name}.
- uidl_strategy: "none" | "x-uidl-header" (prepend `X-UIDL: <uidl>` so POP3 clients keep state).
- notice_policy: {email_rounds: int 0..10, letter: bool, call: bool, lead_days: int >= 0}.
- blackout_dates: list of ISO dates (YYYY-MM-DD) on which no cutover may happen.
- source_system: id of the source system (filled from the export; an override must agree).
- max_connections: int >= 1 or null (null: the source system's limit).
- pinned_wave: int >= 1 or null (planner must put the building into this wave).
- dest_append_lanes: int 1..16 (default 3). Destination connections that append in parallel
  per mailbox being copied (besides its own session and the session that reads stored copies
  back): lower it where the provider limits
  concurrent connections per user or per client address.
- accepted_alterations: list of alteration classes (default []): an altered message (ledger state
  `altered`) of such a class does not block the proof; it is counted and named in the proof and
  the report. Classes: line_endings, header_bytes_replaced, truncated, other. Every class not
  listed blocks.
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mailshift.inventory.exports import Issue

SCHEMA_PATH = Path(__file__).with_name("spec_schema.json")
SPEC_SCHEMA: dict = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))

DEFAULT_SPEC: dict = {
    "size_limit_bytes": 25 * 1024 * 1024,
    "folder_map": {},
    "uidl_strategy": "none",
    "notice_policy": {"email_rounds": 6, "letter": True, "call": True, "lead_days": 14},
    "blackout_dates": [],
    "source_system": None,
    "max_connections": None,
    "pinned_wave": None,
    "dest_append_lanes": 3,
    "accepted_alterations": [],
}

#: the alteration classes the copier and the verifier name (`states.ALTERATION_CLASSES`)
ALTERATION_CLASSES: tuple = tuple(SPEC_SCHEMA["properties"]["accepted_alterations"]["items"]["enum"])


def merge(base: dict, override: dict | None) -> dict:
    """Deep merge: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _normalize(obj: Any) -> Any:
    """YAML turns 2025-12-31 into a date; the spec stores ISO strings (JSON)."""
    if isinstance(obj, (_dt.date, _dt.datetime)):
        return obj.isoformat()
    if isinstance(obj, dict):
        return {k: _normalize(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_normalize(v) for v in obj]
    return obj


def _node_at(node: yaml.Node | None, path: list) -> tuple[yaml.Node | None, yaml.Node | None]:
    """(key node, value node) at path in a composed YAML tree (best effort)."""
    key_node = None
    for p in path:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(p):
                    key_node, node = k, v
                    break
            else:
                return key_node, node
        elif isinstance(node, yaml.SequenceNode) and isinstance(p, int) and p < len(node.value):
            key_node, node = node.value[p], node.value[p]
        else:
            return key_node, node
    return key_node, node


def _line(node: yaml.Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 1


def _field(path) -> str:
    return ".".join(str(p) for p in path) or "-"


def validate_partial(doc: Any, fname: str, root: yaml.Node | None, record: str = "") -> list[Issue]:
    """Validate a (partial) spec mapping against SPEC_SCHEMA; issues carry file:line: field."""
    issues: list[Issue] = []
    if doc is None:
        return issues
    if not isinstance(doc, dict):
        return [Issue(fname, _line(root), "-", "spec must be a mapping", record)]
    validator = jsonschema.Draft202012Validator(SPEC_SCHEMA)
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        path = list(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = set(err.schema.get("properties", {}))
            for extra in sorted(k for k in err.instance if k not in allowed):
                knode, _ = _node_at(root, path + [extra])
                issues.append(Issue(fname, _line(knode), _field(path + [extra]), "unknown key", record))
            continue
        knode, vnode = _node_at(root, path)
        msg = err.message
        if path[:1] == ["accepted_alterations"] and err.validator == "enum":
            msg = (f"unknown alteration class {err.instance!r}: the classes are "
                   f"{', '.join(ALTERATION_CLASSES)}")
        if len(msg) > 160:
            msg = msg[:157] + "..."
        issues.append(Issue(fname, _line(vnode or knode), _field(path), msg, record))
    # dates: the pattern accepts 2025-02-30; check they are real dates
    for i, d in enumerate(doc.get("blackout_dates") or []):
        if isinstance(d, str):
            try:
                _dt.date.fromisoformat(d)
            except ValueError:
                _, vnode = _node_at(root, ["blackout_dates", i])
                issues.append(Issue(fname, _line(vnode), f"blackout_dates.{i}", f"not a date: {d!r}", record))
    return issues


def load_spec_file(path: Path, fname: str, record: str = "") -> tuple[dict | None, list[Issue]]:
    """Read and validate one YAML spec file (override or defaults)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [Issue(fname, 1, "-", f"undecodable bytes for utf-8 at byte {exc.start}", record)]
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        return None, [Issue(fname, line, "-", f"invalid YAML: {getattr(exc, 'problem', exc)}", record)]
    except ValueError as exc:  # e.g. an unquoted impossible date such as 2025-02-30
        return None, [Issue(fname, 1, "-", f"invalid YAML value: {exc}", record)]
    doc = _normalize(doc)
    issues = validate_partial(doc, fname, root, record)
    return (doc or {}), issues


def resolve(override: dict | None, defaults: dict | None = None) -> dict:
    """Effective spec: DEFAULT_SPEC <- defaults <- override."""
    return merge(merge(DEFAULT_SPEC, defaults), override)
