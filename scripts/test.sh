#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite.  Extra arguments go to pytest, e.g.
#   scripts/test.sh -x -k roaming
# Exits with pytest's status; "no tests collected" (pytest status 5) is a failure too.
#
# The suite runs on the data path setup.sh built (native when wgpy._crypto/_offload compiled; with CI=true the
# suite fails if they did not).  Without extra arguments a fast sample then runs on the pure-Python data path
# (WGPY_NATIVE=0): the unit and runtime layers and the wgpy<->wgpy namespace tests, so the fallback stays green.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

rc=0
.venv/bin/python -m pytest -q --durations=15 tests "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
    echo "test.sh: pytest collected no tests -- treating that as a failure" >&2
fi
if [[ $# -eq 0 ]]; then
    echo "test.sh: the pure-Python data path (WGPY_NATIVE=0): unit, runtime and wgpy<->wgpy namespace tests" >&2
    prc=0
    WGPY_NATIVE=0 .venv/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/runtime \
        tests/integration/test_wgpy_pair.py tests/integration/test_tun_offloads.py || prc=$?
    [[ $rc -ne 0 ]] || rc=$prc
fi
exit "$rc"
