#!/usr/bin/env bash
# Idempotent setup for wgpy on Debian: the system packages the tests and the demo use, then .venv with
# wgpy installed editable plus its test extras.  Safe to run again and again; it only does what is missing.
#
#   PYTHON=/path/to/python3.x scripts/setup.sh   # force an interpreter (must be >= 3.11)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# --- system packages ------------------------------------------------------------------------------------------
PACKAGES=(iproute2 iputils-ping wireguard-tools wireguard-go iperf3 nftables tcpdump socat python3-venv
          openssl)   # openssl: the self-signed certificate of the TLS transport tests (#7)

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

if command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for pkg in "${PACKAGES[@]}"; do
        installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "installing: ${missing[*]}"
        SUDO=()
        if [[ $(id -u) -ne 0 ]]; then
            command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install ${missing[*]}"
            SUDO=(sudo)
        fi
        export DEBIAN_FRONTEND=noninteractive
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
    else
        log "system packages present"
    fi
else
    log "no dpkg here; not installing system packages (need: ${PACKAGES[*]})"
fi

# --- python >= 3.11 ----------------------------------------------------------------------------------------------
py_ok() {
    [[ -n "$1" ]] && "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

PY=""
for cand in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
    [[ -n "$cand" ]] || continue
    path=$(command -v "$cand" 2>/dev/null) || continue
    if py_ok "$path"; then PY=$path; break; fi
done
[[ -n "$PY" ]] || die "no python3 >= 3.11 with the venv module found (set PYTHON=...)"

# --- virtualenv ----------------------------------------------------------------------------------------------------
VENV="$REPO/.venv"
if ! py_ok "$VENV/bin/python" || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "creating $VENV with $PY ($("$PY" -V 2>&1))"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi

# Re-install only when pyproject.toml changed or the install is broken (editable, so source edits need nothing).
STAMP="$VENV/.wgpy-setup-stamp"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
have=$(cat "$STAMP" 2>/dev/null || true)
if [[ "$want" != "$have" ]] || ! "$VENV/bin/python" -c 'import wgpy, pytest' >/dev/null 2>&1 \
        || [[ ! -x "$VENV/bin/wgpy" ]]; then
    log "pip install -e '.[test]'"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO[test]"
    echo "$want" >"$STAMP"
else
    log "$VENV up to date"
fi
