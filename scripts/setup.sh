#!/usr/bin/env bash
# Idempotent setup for wgpy on Debian: the system packages the tests and the demo use, then .venv with
# wgpy installed editable plus its test extras.  Safe to run again and again; it only does what is missing.
#
#   PYTHON=/path/to/python3.x scripts/setup.sh   # force an interpreter (must be >= 3.11)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

PROG=setup
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
umask 022   # the virtualenv is read by the daemons that drop to another user, and by the tests that do

# --- system packages ------------------------------------------------------------------------------------------
PACKAGES=(iproute2 iputils-ping wireguard-tools wireguard-go iperf3 nftables tcpdump socat python3-venv
          openssl    # openssl: the self-signed certificate of the TLS transport tests (#7)
          gcc python3-dev libssl-dev    # the native data path (setup.py, src/native/*.c against libcrypto)
          prometheus zbar-tools systemd    # operations tests: a real Prometheus + promtool, zbarimg decodes
                                           # the QR codes, systemd-analyze verifies the unit
          postgresql                       # the mesh server on PostgreSQL: tests start a private cluster
          chromium chromium-driver fonts-dejavu-core)   # the mesh web admin test: a real headless browser

install_packages "${PACKAGES[@]}"
pick_python

# --- virtualenv ----------------------------------------------------------------------------------------------------
VENV="$REPO/.venv"
venv_base() { sed -n 's/^executable *= *//p' "$VENV/pyvenv.cfg" 2>/dev/null; }
if ! py_ok "$VENV/bin/python" || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1 \
        || [[ "$(readlink -f "$(venv_base)" 2>/dev/null)" != "$(readlink -f "$PY")" ]]; then
    log "creating $VENV with $PY ($("$PY" -V 2>&1))"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi
if ! world_reachable "$VENV/bin/python"; then
    log "note: $REPO is not reachable by other users; the tests that drop to user nobody will be skipped"
fi

# Re-install only when the build inputs changed or the install is broken (editable, so Python source edits need
# nothing; a changed C source of the native data path is rebuilt).
STAMP="$VENV/.wgpy-setup-stamp"
build_inputs=(pyproject.toml setup.py)
shopt -s nullglob
build_inputs+=(src/native/*.c src/native/*.h)
shopt -u nullglob
want=$(cat "${build_inputs[@]}" | sha256sum | cut -d' ' -f1)
have=$(cat "$STAMP" 2>/dev/null || true)
if [[ "$want" != "$have" ]] || ! "$VENV/bin/python" -c 'import wgpy, pytest' >/dev/null 2>&1 \
        || [[ ! -x "$VENV/bin/wgpy" ]]; then
    log "pip install -e '.[test]'"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO[test]"
    echo "$want" >"$STAMP"
else
    log "$VENV up to date"
fi
"$VENV/bin/python" - <<'PY' || true
from wgpy import native
for name in ("_crypto", "_offload"):
    native.load(name)
print("setup: data path:", ", ".join(f"{k} {v}" for k, v in native.status().items()))
PY
