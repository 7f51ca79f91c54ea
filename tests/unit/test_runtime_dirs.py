"""Runtime directories get the modes wgpy chooses, whatever the umask (issue 20: under `umask 077` they came out
0700 and a daemon running as another user could not reach its own socket)."""

from __future__ import annotations

import os
import stat

from wgpy.host import privileges


def test_make_dir_ignores_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        target = tmp_path / "run" / "wireguard"
        privileges.make_dir(str(target), privileges.SYSTEM_DIR_MODE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o755     # a missing parent too


def test_make_dir_leaves_an_existing_directory_alone(tmp_path):
    target = tmp_path / "mine"
    target.mkdir(mode=0o700)
    os.chmod(target, 0o700)
    privileges.make_dir(str(target), 0o755)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
