#!/usr/bin/env bash
# Install wgpy for the whole system, as root: `wgpy` and `wgpyd` on every user's PATH (and on wg-quick's, for
# WG_QUICK_USERSPACE_IMPLEMENTATION=wgpyd), independent of this checkout once done.
#
#   ./scripts/install.sh                 # Debian packages, a virtualenv in /opt/wgpy, links in /usr/local/bin,
#                                        #  the systemd unit wgpy@.service
#   ./scripts/install.sh --uninstall     # removes the links, the unit and /opt/wgpy (configs in /etc/wireguard stay)
#
#   WGPY_PREFIX=/opt/wgpy  WGPY_BIN_DIR=/usr/local/bin  WGPY_UNIT_DIR=/etc/systemd/system
#   PYTHON=/usr/bin/python3   (defaults shown)
#
# What it installs: the Debian packages wgpy runs with (iproute2 for `ip`, wireguard-tools for `wg`/`wg-quick`,
# nftables for Masquerade, python3-venv), then a virtualenv built with an interpreter every user can run (Debian's
# python3 first) holding a copy of wgpy and its Python dependencies (cryptography, pyroute2, numpy) from PyPI.
# Everything is made readable by all users whatever the umask, so a daemon that drops to another user
# (`User =`) can still run its own code. The template unit systemd/wgpy@.service goes to /etc/systemd/system
# (`systemctl enable --now wgpy@wg0` then runs /etc/wireguard/wg0.conf); systemd is told when it runs.
# Running it again upgrades in place.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
PROG=install
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
umask 022

PREFIX=${WGPY_PREFIX:-/opt/wgpy}
BIN_DIR=${WGPY_BIN_DIR:-/usr/local/bin}
COMMANDS=(wgpy wgpyd)
UNIT_DIR=${WGPY_UNIT_DIR:-/etc/systemd/system}
UNIT=wgpy@.service

case "${1:-}" in
    "") ;;
    --uninstall)
        for cmd in "${COMMANDS[@]}"; do
            if [[ -L "$BIN_DIR/$cmd" && "$(readlink "$BIN_DIR/$cmd")" == "$PREFIX/bin/$cmd" ]]; then
                rm -f "$BIN_DIR/$cmd"
            fi
        done
        [[ ! -f "$PREFIX/pyvenv.cfg" ]] || rm -rf "$PREFIX"
        if grep -qs 'wgpy up --foreground' "$UNIT_DIR/$UNIT"; then
            rm -f "$UNIT_DIR/$UNIT"
            [[ ! -d /run/systemd/system ]] || systemctl daemon-reload || true
        fi
        log "removed $PREFIX, its links in $BIN_DIR and $UNIT_DIR/$UNIT"
        exit 0 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown argument ${1} (try --help)" ;;
esac

[[ -w "$(dirname "$PREFIX")" || $(id -u) -eq 0 ]] || die "run this as root: it writes $PREFIX and $BIN_DIR"
if [[ -e "$PREFIX" && ! -f "$PREFIX/pyvenv.cfg" ]]; then
    die "$PREFIX exists and is not a wgpy virtualenv; remove it or set WGPY_PREFIX"
fi

install_packages iproute2 wireguard-tools nftables python3-venv
pick_python

if [[ ! -x "$PREFIX/bin/python" ]] || ! "$PREFIX/bin/python" -m pip --version >/dev/null 2>&1; then
    log "creating $PREFIX with $PY ($("$PY" -V 2>&1))"
    rm -rf "$PREFIX"
    "$PY" -m venv "$PREFIX"
fi
log "installing wgpy from $REPO into $PREFIX"
# a copy, not an editable install: the system install must not depend on this checkout staying where it is
"$PREFIX/bin/python" -m pip install -q --disable-pip-version-check --upgrade --force-reinstall --no-deps "$REPO"
"$PREFIX/bin/python" -m pip install -q --disable-pip-version-check "$REPO"
chmod -R a+rX "$PREFIX"

mkdir -p "$BIN_DIR"
for cmd in "${COMMANDS[@]}"; do
    ln -sfn "$PREFIX/bin/$cmd" "$BIN_DIR/$cmd"
done
log "installed: $("$BIN_DIR/wgpy" --version) as $BIN_DIR/wgpy and $BIN_DIR/wgpyd"

# the systemd unit, pointing at the commands where they were linked
mkdir -p "$UNIT_DIR"
sed "s#/usr/local/bin/#$BIN_DIR/#g" systemd/$UNIT >"$UNIT_DIR/$UNIT.tmp"
chmod 0644 "$UNIT_DIR/$UNIT.tmp"
mv -f "$UNIT_DIR/$UNIT.tmp" "$UNIT_DIR/$UNIT"
if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
    log "installed $UNIT_DIR/$UNIT: systemctl enable --now wgpy@wg0 runs /etc/wireguard/wg0.conf"
else
    log "installed $UNIT_DIR/$UNIT (systemd is not running here: nothing reloaded)"
fi
if ! world_reachable "$PREFIX/bin/python"; then
    log "warning: $PREFIX/bin/python is not reachable by other users: \`User =\` will not work"
fi
