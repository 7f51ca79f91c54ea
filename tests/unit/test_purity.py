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
             "os", "multiprocessing", "signal", "secrets", "ssl", "fcntl", "pyroute2"}
ALLOWED_EXTRA = {"config.py": {"os", "ssl"},   # load(): reads the file, checks the TLS files it names
                 "native.py": {"os"}}          # reads WGPY_NATIVE once, at import (which data path runs)


def pure_files() -> list[Path]:
    files = sorted((SRC / "protocol").glob("*.py")) + sorted((SRC / "routing").glob("*.py"))
    files += sorted((SRC / "streams").glob("*.py")) + sorted((SRC / "ext").glob("*.py"))
    files += sorted((SRC / "settings").glob("*.py"))          # the settings table and its value types
    files += [SRC / "crypto.py", SRC / "constants.py", SRC / "uapi" / "protocol.py", SRC / "uapi" / "transport.py",
              SRC / "uapi" / "plan.py",
              SRC / "config.py", SRC / "native.py"]
    return files


def _module_file(parts: list[str]) -> Path | None:
    """The file of wgpy module `parts` (relative to src/wgpy), or None if it is no module of ours."""
    base = SRC.joinpath(*parts) if parts else SRC
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def wgpy_imports(path: Path) -> set[Path]:
    """The files of the wgpy modules `path` imports (relative or absolute, nested in functions too)."""
    here = list(path.relative_to(SRC).parent.parts)
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "wgpy"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else list(here)
            elif node.module and node.module.split(".")[0] == "wgpy":
                base = []
                node_module = node.module.split(".", 1)[1] if "." in node.module else ""
                targets = [base + (node_module.split(".") if node_module else []) + [a.name] for a in node.names]
                targets += [base + (node_module.split(".") if node_module else [])]
                base = None
            else:
                continue
            if base is not None:
                mod = node.module.split(".") if node.module else []
                targets = [base + mod + [a.name] for a in node.names] + [base + mod]
        for t in targets:
            f = _module_file(t)
            if f is not None and f != path:
                found.add(f)
    return found


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


def test_no_io_reachable_through_other_modules():
    """Transitively: every wgpy module a sans-IO module imports (and what that imports ...) is itself one of the
    sans-IO modules, so none can reach socket, ssl, select or os I/O through another module."""
    pure = set(pure_files())
    for start in sorted(pure):
        seen, todo = {start}, [start]
        while todo:
            f = todo.pop()
            for dep in wgpy_imports(f):
                if dep.name == "__init__.py" and dep not in pure:
                    assert not [m for _, m in imported_modules(ast.parse(dep.read_text())) if m in FORBIDDEN], dep
                    continue                       # a package's own __init__ (wgpy/__init__.py: the version)
                assert dep in pure, (f"{start.relative_to(SRC)} reaches {dep.relative_to(SRC)} (through "
                                     f"{f.relative_to(SRC)}), which is not sans-IO")
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)


def test_transitive_scanner_sees_an_io_module(tmp_path):
    deps = wgpy_imports(SRC / "daemon.py")
    assert SRC / "io" / "stream.py" in deps and SRC / "protocol" / "device.py" in deps


def test_scanner_catches_nested_and_dynamic_imports():
    code = "def f():\n    import time\n    from os import path\n    __import__('socket')\n" \
           "import importlib\nimportlib.import_module('asyncio.tasks')\n"
    mods = {m for _, m in imported_modules(ast.parse(code))}
    assert {"time", "os", "socket", "asyncio"} <= mods


def test_relative_imports_stay_inside_the_pure_core():
    """protocol/, routing/ and ext/ may import relatively only from the pure modules (not io/, daemon, cli ...)."""
    pure_names = {"protocol", "routing", "crypto", "constants", "ext", "native"}
    for path in sorted((SRC / "protocol").glob("*.py")) + sorted((SRC / "routing").glob("*.py")) \
            + sorted((SRC / "ext").glob("*.py")):
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


def test_the_test_support_package_is_not_core():
    """src/wgpy_testkit (namespaces, processes, the lab, the two-core harness, the fuzz targets) is test and bench
    support: it is never scanned as sans-IO core, and no module of wgpy imports it."""
    kit = SRC.parent / "wgpy_testkit"
    assert (kit / "__init__.py").is_file()
    assert not [f for f in pure_files() if kit in f.parents]
    users = [str(f.relative_to(SRC)) for f in sorted(SRC.rglob("*.py"))
             if any(mod == "wgpy_testkit" for _, mod in imported_modules(ast.parse(f.read_text(), filename=str(f))))]
    assert not users, f"wgpy modules import the test support package: {users}"
