"""The protocol core is sans-IO: its modules must not import I/O, clocks, threads, logging or randomness.

Scans the source with `ast` (no import side effects), including imports nested in functions and
`__import__` / `importlib` calls.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "wgpy"

FORBIDDEN = {"socket", "asyncio", "select", "selectors", "time", "threading", "subprocess", "logging", "random",
             "os", "multiprocessing", "signal", "secrets"}
ALLOWED_EXTRA = {"config.py": {"os"}}


def pure_files() -> list[Path]:
    files = sorted((SRC / "protocol").glob("*.py")) + sorted((SRC / "routing").glob("*.py"))
    files += [SRC / "crypto.py", SRC / "constants.py", SRC / "uapi" / "protocol.py", SRC / "config.py"]
    return files


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, alias.name.split(".")[0]))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in ("__import__", "import_module") and node.args and isinstance(node.args[0], ast.Constant):
                found.append((node.lineno, str(node.args[0].value).split(".")[0]))
    return found


def test_the_scanned_set_is_not_empty():
    files = pure_files()
    assert all(f.exists() for f in files), [f for f in files if not f.exists()]
    names = {f.name for f in files}
    assert {"device.py", "noise.py", "timers.py", "cookie.py", "allowedips.py"} <= names


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_io_imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    allowed = ALLOWED_EXTRA.get(path.name, set()) if path.parent == SRC else set()
    bad = [(line, mod) for line, mod in imported_modules(tree) if mod in FORBIDDEN - allowed]
    assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_scanner_catches_nested_and_dynamic_imports():
    code = "def f():\n    import time\n    from os import path\n    __import__('socket')\n" \
           "import importlib\nimportlib.import_module('asyncio.tasks')\n"
    mods = {m for _, m in imported_modules(ast.parse(code))}
    assert {"time", "os", "socket", "asyncio"} <= mods


def test_relative_imports_stay_inside_the_pure_core():
    """protocol/ and routing/ may import relatively only from the pure modules (not io/, daemon, cli ...)."""
    pure_names = {"protocol", "routing", "crypto", "constants"}
    for path in sorted((SRC / "protocol").glob("*.py")) + sorted((SRC / "routing").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                if node.level == 1:
                    continue                           # a sibling in the same pure package
                target = (node.module or "").split(".")[0]
                names = [a.name for a in node.names] if not target else [target]
                for n in names:
                    assert n in pure_names, f"{path.name}:{node.lineno} imports ..{n}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                    node.module.startswith("wgpy."):
                assert node.module.split(".")[1] in pure_names, f"{path.name}:{node.lineno} {node.module}"
