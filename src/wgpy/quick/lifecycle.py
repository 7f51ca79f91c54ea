"""The daemon's life: `wgpy up --foreground` runs a Session's interface in this process until SIGTERM/SIGINT or
until the interface is deleted; `wgpy up` starts that same foreground process detached, logging to
RUN_DIR/IFACE.log, and waits for its readiness report on a pipe ("READY" or "ERROR message", after any
"NOTE message" lines it prints). Under systemd
(Type=notify) the foreground daemon also reports READY=1 and STOPPING=1 to $NOTIFY_SOCKET (ops/sdnotify.py)."""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import time

from .. import config as cfgmod
from ..host import privileges
from ..host.harden import is_dumpable, no_core_dumps
from ..host.privileges import RUN_DIR
from ..ops import sdnotify
from .hooks import UpError
from .interrupt import Interrupted, UpSignals
from .preflight import preflight
from .session import Session

log = logging.getLogger("wgpy")

READY_TIMEOUT = 60.0   # seconds `wgpy up` waits for the daemon's report


def up_foreground(path: str, ready_fd: int | None = None) -> int:
    """Run the interface in this process until SIGTERM/SIGINT or until the interface is deleted."""
    def report(msg: str) -> None:
        if ready_fd is not None:
            try:
                os.write(ready_fd, msg.encode())
            except OSError:
                pass

    signals = UpSignals()
    signals.install()   # first: a SIGTERM/SIGINT at any moment of up undoes what was done (interrupt.py)
    no_core_dumps()   # before the private key is read
    log.info("core dumps off (RLIMIT_CORE %d, dumpable %d)", resource.getrlimit(resource.RLIMIT_CORE)[1],
             int(is_dumpable()))
    session = None

    def notes() -> None:
        """What `up` has to tell besides success or failure (a crashed daemon's leftovers cleaned up)."""
        for note in getattr(session, "notes", ()):
            for line in note.splitlines():
                report("NOTE " + line + "\n")
    try:
        cfg = cfgmod.load(path)
        for w in preflight(cfg):
            if ready_fd is None:
                print(w, file=sys.stderr)
        signals.check()
        session = Session(cfg, signals)
        session.up()
    except (cfgmod.ConfigError, UpError, OSError) as e:
        msg = f"wgpy: {e}"
        print(msg, file=sys.stderr)
        notes()
        report("ERROR " + msg + "\n")
        return 1
    notes()
    if cfg.user is not None:
        try:
            session.drop_privileges()
        except OSError as e:
            session.teardown()
            msg = f"wgpy: cannot run as user {cfg.user}: {e}"
            print(msg, file=sys.stderr)
            report("ERROR " + msg + "\n")
            return 1
        log.info("running as user %s (uid %d) with CAP_NET_ADMIN only", cfg.user, os.getuid())
    try:
        signals.check()     # a signal during the last steps: up did not complete
    except Interrupted as e:
        session.teardown()
        msg = f"wgpy: {e}"
        print(msg, file=sys.stderr)
        report("ERROR " + msg + "\n")
        return 1
    signals.running(session.iface)
    log.info("interface %s is up, listening on UDP port %d", cfg.name, session.iface.listen_port)
    report("READY\n")
    if ready_fd is not None:
        os.close(ready_fd)
    # systemd (Type=notify, systemd/wgpy@.service): ready once everything `up` does is done
    sdnotify.notify("READY=1", f"STATUS=interface {cfg.name} is up, UDP port {session.iface.listen_port}")
    try:
        session.iface.run()             # returns at once if a signal came since signals.running()
    finally:
        sdnotify.notify("STOPPING=1", f"STATUS=interface {cfg.name}: tearing down")
        session.teardown()
    return 0


def up_background(path: str) -> int:
    no_core_dumps()   # this process reads the private key too
    cfg = cfgmod.load(path)
    for w in preflight(cfg):
        print(w, file=sys.stderr)
    logpath = os.path.join(privileges.runtime_dir(RUN_DIR, create=True), f"{cfg.name}.log")
    r, w = os.pipe()
    # the log never holds key material, but it is the daemon's business only: owner-only, like the UAPI socket
    logfd = os.open(logpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.fchmod(logfd, 0o600)
    with os.fdopen(logfd, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wgpy", "up", "--foreground", "--ready-fd", str(w), path],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, pass_fds=(w,), start_new_session=True)
    os.close(w)
    buf = b""
    text = None
    deadline = time.monotonic() + READY_TIMEOUT
    with os.fdopen(r, "rb") as rf:
        while text is None and time.monotonic() < deadline:
            chunk = rf.read1(4096)
            if not chunk:
                break
            *lines, buf = (buf + chunk).split(b"\n")
            for line in lines:                 # "NOTE ..." lines, then "READY" or "ERROR ..."
                line = line.decode(errors="replace").strip()
                if line.startswith("NOTE "):
                    print(line[5:], file=sys.stderr)
                elif line:
                    text = line
                    break
    if text is None:
        text = buf.decode(errors="replace").strip()
    if text == "READY":
        print(f"wgpy: interface {cfg.name} is up (pid {proc.pid}, log {logpath})", file=sys.stderr)
        return 0
    if text.startswith("ERROR "):
        print(text[6:], file=sys.stderr)
    else:
        print(f"wgpy: the daemon for {cfg.name} did not start; see {logpath}", file=sys.stderr)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    return 1
