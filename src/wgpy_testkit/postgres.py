"""A private PostgreSQL cluster for a test: Debian's server binaries, initdb and pg_ctl run as user nobody in a
directory of the test's own, listening on a unix socket there only (no TCP port), removed afterwards.

    with PgCluster() as pg:
        pg.url            # postgresql+psycopg://wgpy@/wgpy?host=/tmp/wgpy-pg-XXXX
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile

__all__ = ["PgCluster", "pg_bin"]


def pg_bin() -> str | None:
    """Debian's PostgreSQL server binaries directory (the newest installed), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


class PgCluster:
    def __init__(self, user: str = "nobody") -> None:
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (Debian package postgresql; scripts/setup.sh)")
        self.user = user
        self.dir = tempfile.mkdtemp(prefix="wgpy-pg-", dir="/tmp")
        pw = pwd.getpwnam(user)
        os.chmod(self.dir, 0o755)                  # the daemons (root, in namespaces) reach the socket
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.dir, "data")
        self.url = f"postgresql+psycopg://wgpy@/wgpy?host={self.dir}"
        self.started = False

    def _as_user(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = ["setpriv", "--reuid", self.user, "--regid", str(pwd.getpwnam(self.user).pw_gid), "--clear-groups",
               "--", *argv]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir,
                             env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res

    def start(self) -> "PgCluster":
        old = os.umask(0o077)
        try:
            self._as_user(f"{self.bin}/initdb", "-D", self.data, "-U", "wgpy", "-A", "trust", "--no-sync",
                          "-E", "UTF8")
            self._as_user(f"{self.bin}/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "-t",
                          "60", "-o", f"-k {self.dir} -c listen_addresses='' -c fsync=off -c max_connections=100",
                          "start")
            self.started = True
            self._as_user(f"{self.bin}/createdb", "-h", self.dir, "-U", "wgpy", "wgpy")
        finally:
            os.umask(old)
        return self

    def stop(self) -> None:
        if self.started:
            try:
                self._as_user(f"{self.bin}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PgCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
