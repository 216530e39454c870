"""tokend.core stays pure (core/README.md): no HTTP, no SQL, no other tokend layer, no clock.

Checked twice: dynamically, by importing every core module in a fresh interpreter and
diffing ``sys.modules``; statically, by reading every import statement (including those
inside functions, which an import alone would not run).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import tokend.core

CORE_DIR = Path(tokend.core.__file__).parent
FORBIDDEN = (
    "starlette",
    "uvicorn",
    "httpx",
    "sqlalchemy",
    "psycopg",
    "psycopg2",
    "asyncpg",
    "sqlite3",
    "alembic",
    "jinja2",
    "click",
    "tokend.store",
    "tokend.web",
    "tokend.keys",
    "tokend.cli",
    "tokend.client",
    "tokend.config",
    "tokend.runtime",
)
CLOCK_MODULES = ("time", "datetime")  # only tokend.core.clock may read the time


def _core_modules() -> list[str]:
    names = []
    for path in sorted(CORE_DIR.rglob("*.py")):
        parts = path.relative_to(CORE_DIR).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(("tokend", "core", *parts)))
    return names


CORE_MODULES = _core_modules()


def _is_forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def test_the_walk_finds_the_core() -> None:
    """Guards the two tests below against passing on an empty list."""
    for expected in (
        "tokend.core",
        "tokend.core.service",
        "tokend.core.grants",
        "tokend.core.grants.refresh_token",
        "tokend.core.grants.client_credentials",
    ):
        assert expected in CORE_MODULES


def test_the_checker_recognises_forbidden_modules() -> None:
    assert _is_forbidden("sqlalchemy")
    assert _is_forbidden("sqlalchemy.orm")
    assert _is_forbidden("tokend.store.sqlstore")
    assert not _is_forbidden("tokend.core.secrets")
    assert not _is_forbidden("tokend.storey")


_PROBE = """
import importlib, json, sys
before = set(sys.modules)
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_importing_core_loads_nothing_forbidden() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *CORE_MODULES],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert "tokend.core.grants.refresh_token" in loaded  # the probe really imported the core
    assert [m for m in loaded if _is_forbidden(m)] == []


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                package = path.relative_to(CORE_DIR.parent.parent).with_suffix("").parts
                base = ".".join(package[: len(package) - node.level])
                found.append((node.lineno, f"{base}.{node.module}" if node.module else base))
            else:
                found.append((node.lineno, node.module or ""))
    return found


CORE_FILES = sorted(CORE_DIR.rglob("*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=[str(p.relative_to(CORE_DIR)) for p in CORE_FILES])
def test_no_forbidden_import_statement(path: Path) -> None:
    bad = [(line, name) for line, name in _imports(path) if _is_forbidden(name)]
    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", CORE_FILES, ids=[str(p.relative_to(CORE_DIR)) for p in CORE_FILES])
def test_only_the_clock_module_reads_the_time(path: Path) -> None:
    if path == CORE_DIR / "clock.py":
        assert any(name == "time" for _, name in _imports(path))  # the check can see it
        return
    bad = [(line, name) for line, name in _imports(path) if name.split(".")[0] in CLOCK_MODULES]
    assert bad == [], f"{path.name} imports {bad}: take time from the Clock passed in"
