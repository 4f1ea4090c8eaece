"""The import rules of docs/architecture.md, checked on the source tree (no imports executed).

- the core (`mailshift`, outside `mailshift.airflow`) never imports Airflow;
- the product never imports the lab (`lab`), and the wheel does not ship it;
- SQL lives in `mailshift.store` only: no other module sends a statement;
- `mailshift.airflow` holds no SQL and no rules;
- every package of the module map in docs/architecture.md exists, and every package exists in it;
- no function of the product is longer than 80 lines.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "include" / "mailshift"
PLUGIN = ROOT / "plugins" / "mailshift_ui.py"
# statements are written in upper case here (as in the migrations); prose is not
SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|TRUNCATE|COPY|LOCK)\s.*"
                 r"\b(FROM|INTO|SET|TABLE|AS|VALUES)\b", re.S)


def _modules():
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(CORE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        yield name, path, ast.parse(path.read_text(), str(path))


def _imports(tree) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def _strings(tree):
    parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts:
            yield node
        elif isinstance(node, ast.JoinedStr):
            yield node


def _text(node) -> str:
    if isinstance(node, ast.Constant):
        return node.value
    return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)


def _sql_in(tree) -> list[str]:
    return [_text(n)[:60] for n in _strings(tree) if SQL.match(_text(n))]


MODULES = list(_modules())


@pytest.mark.parametrize("name,path,tree", MODULES, ids=[m[0] for m in MODULES])
def test_core_imports(name, path, tree):
    imported = _imports(tree)
    assert not {m for m in imported if m == "lab" or m.startswith("lab.")}, f"{name} imports the lab"
    if not name.startswith("mailshift.airflow"):
        assert not {m for m in imported if m == "airflow" or m.startswith("airflow.")}, f"{name} imports Airflow"


@pytest.mark.parametrize("name,path,tree", MODULES, ids=[m[0] for m in MODULES])
def test_sql_only_in_store(name, path, tree):
    if name.startswith("mailshift.store"):
        return
    assert _sql_in(tree) == [], f"{name} holds SQL; it belongs in mailshift.store"


def test_airflow_package_has_no_rules_imports():
    """The Airflow glue turns task context into plain values: it reads no table and decides nothing
    (no SQL, checked above); it may call rules, never re-implement them with the proof table."""
    for name, _path, tree in MODULES:
        if name.startswith("mailshift.airflow"):
            assert "psycopg2" not in _imports(tree), f"{name} talks to the database itself"


def test_environment_is_read_in_settings_only():
    """settings.py names every variable mailshift reads; GX's own analytics switch is set, not read."""
    for name, _path, tree in MODULES:
        if name in ("mailshift.settings", "mailshift.verify.gx_suites"):
            continue
        reads = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in ("environ", "getenv")
                 and isinstance(n.value, ast.Name) and n.value.id == "os"]
        assert reads == [], f"{name} reads the environment at lines {reads}: use mailshift.settings"


def test_plugin_has_no_sql():
    assert _sql_in(ast.parse(PLUGIN.read_text())) == []


def test_sql_detector_catches_sql():
    tree = ast.parse('q = "SELECT id FROM mailbox WHERE x = %s"\nr = f"UPDATE pass SET status = {s}"\n'
                     'ok = "select a folder to copy from the list"')
    assert len(_sql_in(tree)) == 2


def test_wheel_ships_the_product_only():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["mailshift*"]


def test_module_map_matches_the_tree():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    section = doc.split("## Module map", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_/.]+)` \|", section, re.M))
    actual = {p.name + "/" for p in CORE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    actual |= {p.name for p in CORE.glob("*.py") if p.name != "__init__.py"}
    assert documented == actual


def test_no_function_over_80_lines():
    long = []
    for name, _path, tree in [*MODULES, ("plugins.mailshift_ui", PLUGIN, ast.parse(PLUGIN.read_text()))]:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert long == []
