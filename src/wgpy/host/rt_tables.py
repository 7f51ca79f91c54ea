"""Routing table names, as `ip route add ... table NAME` finds them (what wg-quick's `Table = NAME` passes to ip).

iproute2 knows `local` (255), `main` (254), `default` (253) and `unspec` (0), and reads more names from
/etc/iproute2/rt_tables (recent versions: /usr/share/iproute2/rt_tables when /etc has none) and from the
`*.conf` files of rt_tables.d in both directories. A line is `NUMBER NAME` (the number decimal or 0x hex, any
text after the name ignored); blank lines and lines starting with '#' are skipped; a line of any other form ends
the reading of its file (ip says "Database ... is corrupted"). A name that is not found is taken as a number
the way ip parses one (strtoul with base 0: 0x hex, a leading 0 octal, else decimal, at most 2^32 - 1).

lookup() returns the number, or raises UnknownTable saying where it looked (and which line of which file ended
a reading early).
"""

from __future__ import annotations

import os
import re

__all__ = ["DIRS", "BUILTIN", "UnknownTable", "lookup", "names"]

DIRS = ("/etc/iproute2", "/usr/share/iproute2")
BUILTIN = {"local": 255, "main": 254, "default": 253, "unspec": 0}
_LINE = re.compile(r"[ \t]*(0x[0-9a-fA-F]+|-?[0-9]+)[ \t]+(\S+)")
_MAX = 0xFFFFFFFF


class UnknownTable(ValueError):
    pass


def _files(dirs: tuple[str, ...]) -> list[str]:
    out = []
    main = [os.path.join(d, "rt_tables") for d in dirs]
    for path in main:
        if os.path.isfile(path):
            out.append(path)       # the first that exists: /etc's, else the distribution's
            break
    for d in dirs:
        sub = os.path.join(d, "rt_tables.d")
        try:
            entries = sorted(os.listdir(sub))
        except OSError:
            continue
        out += [os.path.join(sub, e) for e in entries if e.endswith(".conf") and not e.startswith(".")]
    return out


def _read(path: str, table: dict[str, int], problems: list[str]) -> None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return
    for lineno, line in enumerate(text.split("\n"), 1):
        stripped = line.lstrip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            problems.append(f"{path}:{lineno} is not 'NUMBER NAME' (ip stops reading the file there)")
            return
        number = int(m.group(1), 0)
        if 0 <= number <= _MAX:
            table.setdefault(m.group(2), number)     # the first definition of a name is the one used


def names(dirs: tuple[str, ...] = DIRS) -> tuple[dict[str, int], list[str], list[str]]:
    """(name -> number, the files read, problems found)."""
    table = dict(BUILTIN)
    problems: list[str] = []
    files = _files(dirs)
    for path in files:
        _read(path, table, problems)
    return table, files, problems


def _number(text: str) -> int | None:
    """`text` as ip's get_unsigned reads it (strtoul base 0), or None."""
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
        n = int(text, 16)
    elif re.fullmatch(r"0[0-7]*", text):
        n = int(text, 8)
    elif re.fullmatch(r"[1-9][0-9]*", text):
        n = int(text)
    else:
        return None
    return n if n <= _MAX else None


def lookup(name: str, dirs: tuple[str, ...] = DIRS) -> int:
    """The number of routing table `name` (a name or a number), as ip resolves it; raises UnknownTable."""
    table, files, problems = names(dirs)
    if name in table:
        return table[name]
    n = _number(name)
    if n is not None:
        return n
    where = ", ".join(files) if files else f"{os.path.join(dirs[0], 'rt_tables')} (missing)"
    extra = f"; {'; '.join(problems)}" if problems else ""
    raise UnknownTable(f"not a number, and no table of that name in {where}{extra}")
