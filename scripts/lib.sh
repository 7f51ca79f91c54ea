# Shared by setup.sh (the development virtualenv) and install.sh (the system install): Debian packages and the
# choice of interpreter.  Sourced, not run; the caller defines PROG (for messages) before sourcing.

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# install_packages PKG...: apt-get install what is missing (as root; sudo only when it exists and we are not root)
install_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        log "no dpkg here; not installing system packages (need: $*)"
        return 0
    fi
    local missing=() pkg
    for pkg in "$@"; do
        installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        log "system packages present"
        return 0
    fi
    log "installing: ${missing[*]}"
    local SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "run this as root: installing ${missing[*]} needs root"
        SUDO=(sudo)
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
}

# --- python >= 3.11, one every user can run ---------------------------------------------------------------
# A daemon with `User = nobody` re-executes nothing, but it keeps importing its own code after dropping root: an
# interpreter (or a checkout) under a directory other users cannot enter (a Python built into root's 0700 home,
# as pyenv does) would leave it unable to run. So Debian's /usr/bin/python3 comes first, and any candidate whose
# path others cannot reach is taken only when there is nothing else, with a warning.
py_ok() {
    [[ -n "$1" ]] && "$1" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
        >/dev/null 2>&1
}

# every directory from / down to the file lets others through (o+x), and the file itself is executable by others
world_reachable() {
    local path
    path=$(readlink -f "$1") || return 1
    [[ -n "$path" ]] || return 1
    [[ $(( 0$(stat -c '%a' "$path") & 01 )) -ne 0 ]] || return 1
    local dir
    dir=$(dirname "$path")
    while :; do
        [[ $(( 0$(stat -c '%a' "$dir") & 01 )) -ne 0 ]] || return 1
        [[ "$dir" != / ]] || break
        dir=$(dirname "$dir")
    done
}

# pick_python: sets PY to the interpreter to build a virtualenv with
pick_python() {
    PY="" FALLBACK=""; local cand path real
    for cand in "${PYTHON:-}" /usr/bin/python3 python3 python3.13 python3.12 python3.11; do
        [[ -n "$cand" ]] || continue
        path=$(command -v "$cand" 2>/dev/null) || continue
        # pyenv's shims are scripts: ask the interpreter where it really is
        real=$("$path" -c 'import sys; print(sys.executable)' 2>/dev/null) || continue
        py_ok "$real" || continue
        if [[ -n "${PYTHON:-}" && "$cand" == "$PYTHON" ]] || world_reachable "$real"; then PY=$real; break; fi
        [[ -n "$FALLBACK" ]] || FALLBACK=$real
    done
    if [[ -z "$PY" && -n "$FALLBACK" ]]; then
        PY=$FALLBACK
        log "warning: $PY lies under a directory other users cannot enter: a daemon with \`User =\` will not be" \
            "able to run; install python3-venv (Debian) or set PYTHON=... to an interpreter every user can run"
    fi
    [[ -n "$PY" ]] || die "no python3 >= 3.11 with the venv module found (apt-get install python3-venv, or set PYTHON=...)"
}
