"""The README's two commands for a fresh Debian machine are the ones the project runs: CI's .ci/run calls exactly
the test command, and neither needs sudo (a fresh Debian machine, as root, has none)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _fresh_machine_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands on a fresh Debian machine", 1)[1].split("\n## ", 1)[0]
    return [ln.strip() for ln in section.splitlines() if ln.startswith("    ") and ln.strip()]


def test_readme_gives_the_demo_and_the_test_command_as_root():
    cmds = _fresh_machine_commands()
    assert cmds == ["./scripts/demo.sh", "./scripts/test.sh"], cmds
    for cmd in cmds:
        script = ROOT / cmd
        assert script.exists() and script.stat().st_mode & 0o111, f"{cmd} is not an executable script"
    assert "sudo" not in " ".join(cmds)


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    runs = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert re.fullmatch(r"(exec )?(bash )?(\./)?scripts/test\.sh", runs[-1]), runs[-1]


def test_install_command_is_documented_and_exists():
    text = (ROOT / "README.md").read_text()
    assert "./scripts/install.sh" in text
    assert (ROOT / "scripts" / "install.sh").stat().st_mode & 0o111
