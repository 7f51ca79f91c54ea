"""Issue 21 items 12 and 14: the config path must be a regular file of sane size (`wgpy up /dev/zero` read until
memory ran out, a FIFO hung), and interface names are validated as the kernel does (wgpyd truncated names over
15 characters silently; `show` took `../..` into a socket path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wgpy import config

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("path", ["/dev/zero", "/tmp", "fifo"])
def test_config_path_must_be_a_regular_file(tmp_path, path):
    if path == "fifo":
        path = str(tmp_path / "wg0.conf")
        os.mkfifo(path)
    with pytest.raises(config.ConfigError) as e:
        config.load(path)             # returns at once: no read of /dev/zero, no wait on the FIFO
    assert "not a regular file" in str(e.value)


def test_config_file_too_large_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "MAX_CONFIG_SIZE", 1000)
    p = tmp_path / "wg0.conf"
    p.write_text("[Interface]\n" + "# padding\n" * 200)
    with pytest.raises(config.ConfigError) as e:
        config.load(str(p))
    assert "too large" in str(e.value)


@pytest.mark.parametrize("cmd", [["wgpyd", "a" * 16], ["wgpy", "show", "../.."], ["wgpy", "down", "x/y"]])
def test_bad_interface_names_are_refused_with_a_clear_error(cmd):
    res = subprocess.run([str(BIN / cmd[0]), *cmd[1:]], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "invalid interface name" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
