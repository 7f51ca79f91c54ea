"""`wgpy qr CONF [--png FILE]`: a wg-quick config as a QR code, for the WireGuard phone apps ("scan from QR code").

The apps read the config text itself from the code, so the text is encoded as it is (UTF-8, byte mode), after a
check that it is a config at all (settings/ini.py parses it; an error names the line, never a value). The
library is segno (pure Python, no dependencies, writes PNG itself, maintained); error correction level M unless
the text only fits with L. The code holds the private key: the PNG is written owner-only (0600), and the
terminal rendering should not be left on a shared screen.
"""

from __future__ import annotations

import os
import sys

__all__ = ["make", "terminal", "write_png", "qr_main", "MAX_BYTES"]

MAX_BYTES = 2953      # what a version 40 code holds in byte mode at level L


class QrError(Exception):
    pass


def make(text: str):
    """The QR code of `text` (segno.QRCode); QrError when it does not fit in one code."""
    import segno
    data = text.encode("utf-8")
    if len(data) > MAX_BYTES:
        raise QrError(f"the config is {len(data)} bytes; a QR code holds at most {MAX_BYTES}: leave out comments "
                      f"and PostUp/PostDown lines, or split the AllowedIPs")
    try:
        return segno.make(data, error="m", boost_error=False, micro=False)
    except segno.DataOverflowError:
        return segno.make(data, error="l", micro=False)


def terminal(code, out=None) -> None:
    """Two rows of modules per line (half blocks): a version 10 code is 30 lines tall."""
    code.terminal(out=out or sys.stdout, compact=True, border=2)


def write_png(code, path: str, scale: int = 8) -> None:
    """The PNG, owner-only from the start (it holds a private key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        code.save(f, kind="png", scale=scale, border=4)


def qr_main(path: str, png: str | None) -> int:
    from .. import config as cfgmod
    try:
        if path == "-":
            text = sys.stdin.read(cfgmod.MAX_CONFIG_SIZE + 1)
        else:
            with open(path, encoding="utf-8-sig") as f:
                text = f.read(cfgmod.MAX_CONFIG_SIZE + 1)
    except OSError as e:
        print(f"wgpy: {path}: cannot read: {e.strerror or e}", file=sys.stderr)
        return 1
    except UnicodeDecodeError:
        print(f"wgpy: {path}: cannot read: not valid UTF-8", file=sys.stderr)
        return 1
    try:
        cfgmod.parse(text, "<stdin>" if path == "-" else path, name="wg0")
    except cfgmod.ConfigError as e:
        print(f"wgpy: not a WireGuard config: {e}", file=sys.stderr)
        return 1
    try:
        code = make(text)
    except QrError as e:
        print(f"wgpy: {e}", file=sys.stderr)
        return 1
    if png is not None:
        try:
            write_png(code, png)
        except OSError as e:
            print(f"wgpy: {png}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(f"wgpy: wrote {png} (QR version {code.version}, {code.error} error correction; it holds the "
              f"private key: mode 0600)", file=sys.stderr)
        return 0
    terminal(code)
    return 0
