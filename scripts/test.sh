#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite.  Extra arguments go to pytest, e.g.
#   scripts/test.sh -x -k roaming
# Exits with pytest's status; "no tests collected" (pytest status 5) is a failure too.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

rc=0
.venv/bin/python -m pytest -q tests "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
    echo "test.sh: pytest collected no tests -- treating that as a failure" >&2
fi
exit "$rc"
