"""The layers of docs/architecture.md, read from every import statement in src/tokend.

Each package may import only the layers listed for it (and itself); the concrete store
(``tokend.store``) is named only inside the store and by the composition root
(``tokend.runtime``); the client library imports nothing of the server. Imports inside
functions count too: a lazy import is still a dependency. ``tests/core/test_purity.py``
checks the core's third-party imports and clock reads on top of this.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tokend

SRC = Path(tokend.__file__).parent

# layer -> the tokend layers it may import (besides itself). A layer is the first dotted name
# under tokend (``tokend.core.grants.x`` is in ``core``).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "dburl": set(),
    # The log lines and the request id (stdlib logging, read by web's outermost layer and
    # configured by `tokend serve`): it needs nothing of tokend, and must not, since every
    # layer may log through it (an event's fields go in ``extra``, no import needed).
    "logs": set(),
    "keys": {"core"},
    "store": {"core", "keys", "dburl", "metrics"},
    "config": {"core", "dburl"},
    "runtime": {"core", "keys", "store", "dburl", "config", "metrics"},
    "web": {"core", "keys", "config", "runtime", "logs", "metrics"},
    "cli": {"core", "keys", "config", "runtime", "web", "logs", "metrics"},
    "client": set(),
    # The Prometheus metrics: a leaf (prometheus_client only), counted in store/ and web/,
    # so that core/ stays pure and no layer has to pass counters through the core.
    "metrics": set(),
    "__init__": set(),
    "__main__": {"cli"},
}


def _module_of(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(("tokend", *parts))


def _imports(source: str, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``source``, relative ones resolved."""
    package = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "tokend":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


SOURCES = sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def file_imports(path: Path) -> list[tuple[int, str]]:
    module = _module_of(path).removesuffix(".__init__")
    return _imports(path.read_text(), module, is_package=path.name == "__init__.py")


def violations(module: str, imports: list[tuple[int, str]]) -> list[str]:
    own = _layer(module)
    assert own in ALLOWED, f"{module}: a new top-level module needs a row in ALLOWED"
    return [
        f"{module}:{line} imports {imported}"
        for line, imported in imports
        if (layer := _layer(imported)) not in (None, own, "__init__") and layer not in ALLOWED[own]
    ]


def test_every_file_is_read() -> None:
    assert len(SOURCES) > 60
    assert {"core", "store", "web", "cli", "client", "keys"} <= {
        _layer(_module_of(p)) for p in SOURCES
    }


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_each_layer_imports_only_the_layers_below_it(path: Path) -> None:
    assert violations(_module_of(path), file_imports(path)) == []


def test_the_concrete_store_is_named_only_by_the_store_and_the_composition_root() -> None:
    users = {
        str(p.relative_to(SRC))
        for p in SOURCES
        if _layer(_module_of(p)) != "store"
        and any(_layer(m) == "store" for _, m in file_imports(p))
    }
    assert users == {"runtime.py"}


def test_the_checker_sees_a_forbidden_import() -> None:
    """The rules can fail: a web module that reaches into the store, a core module that
    imports the web layer through a relative import inside a function, the client importing
    the server."""
    web = _imports("from tokend.store.clients import Clients\n", "tokend.web.x", is_package=False)
    assert violations("tokend.web.x", web) == [
        "tokend.web.x:1 imports tokend.store.clients",
        "tokend.web.x:1 imports tokend.store.clients.Clients",
    ]
    lazy = _imports(
        "def f():\n    from ...web import app\n", "tokend.core.grants.x", is_package=False
    )
    assert (
        violations("tokend.core.grants.x", lazy)[0] == "tokend.core.grants.x:2 imports tokend.web"
    )
    client = _imports("import tokend.core.jose\n", "tokend.client._wire", is_package=False)
    assert violations("tokend.client._wire", client) == [
        "tokend.client._wire:1 imports tokend.core.jose"
    ]
