"""Which runtime directories a process trusts (issue 21 item 6): root never consults a directory another user
made (a /tmp/wgpy-0 planted by anyone), a user only her own or root's; and `wgpy show` prints nothing a daemon
or a peer said as terminal control characters."""

from __future__ import annotations

import os

import pytest

from wgpy import show as wgshow
from wgpy.host import privileges

NOBODY = 65534


def test_root_trusts_its_own_directory_and_not_one_another_user_made(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root (a directory owned by another user)")
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    os.chmod(mine, 0o755)
    assert privileges.untrusted_reason(str(mine)) is None
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    os.chown(planted, NOBODY, NOBODY)
    assert "owned by uid 65534" in privileges.untrusted_reason(str(planted))
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    assert "writable by other users" in privileges.untrusted_reason(str(open_dir))
    link = tmp_path / "link"
    link.symlink_to(mine)
    assert "symbolic link" in privileges.untrusted_reason(str(link))
    assert "does not exist" in privileges.untrusted_reason(str(tmp_path / "missing"))
    inside = planted / "sub"                 # root's own directory inside another user's is no better
    inside.mkdir()
    assert "owned by uid 65534" in privileges.untrusted_reason(str(inside))


def test_root_never_searches_a_user_runtime_dir(tmp_path, monkeypatch):
    """Before: root's search list was /run/wgpy and /tmp/wgpy-0, a path any user can create first."""
    if os.geteuid() != 0:
        pytest.skip("root's search list")
    system = tmp_path / "run"
    system.mkdir()
    planted = tmp_path / "wgpy-0"
    planted.mkdir()
    monkeypatch.setattr(privileges, "user_runtime_dir", lambda create=False: str(planted))
    assert privileges.search_dirs(str(system)) == [str(system)]
    os.chown(system, NOBODY, NOBODY)         # a system directory that another user owns is skipped as well
    assert privileges.search_dirs(str(system)) == []
    with pytest.raises(privileges.PrivilegeError, match="owned by uid 65534"):
        privileges.runtime_dir(str(system), create=True)


def test_show_writes_control_characters_as_escapes():
    dev, peers = wgshow.parse_get("listen_port=51820\x1b[2J\npublic_key=" + "11" * 32 + "\n"
                                  "endpoint=192.0.2.1:1\x1b]0;owned\x07\nwgpy_last_error=bad\u202etxt\x9b\n"
                                  "allowed_ip=10.0.0.0/8\r\nerrno=0\n")
    lines = wgshow.listing("wgx0", dev, peers, 0.0)
    text = "\n".join(lines)
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) <= 0x9f or c == "\u202e" for c in text), text
    assert "192.0.2.1:1\\x1b]0;owned\\x07" in text and "bad\\u202etxt\\x9b" in text
    assert "listening port: 51820\\x1b[2J" in text
