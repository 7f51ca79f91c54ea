#!/usr/bin/env bash
# The long reliability runs of docs/reliability.md (issue 5), as root:
#   1. bench/fuzz.py: 1,000,000 inputs per target (parse, responder, initiator, under-load)
#   2. the namespace tests of tests/integration/test_hostile_*.py and test_reliability.py with the full knobs:
#      20 MB per impaired-path transfer, 20 s flood phases, a 30 s underlay outage, a 10-minute soak (~5 rekeys)
# Figures go to a JSON-lines file (default: reliability-<date>.jsonl in the current directory) and to stdout.
#
#   (as root) scripts/reliability.sh [--quick] [--out FILE] [--fuzz-inputs N] [--soak-seconds S]
#
# --quick uses the CI sample sizes (the same as the normal test suite). Takes ~20 minutes in full on 2 cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

OUT="reliability-$(date +%Y%m%d-%H%M%S).jsonl"
FUZZ=1000000
SOAK=600
DOWN=30
FLOOD=20
BYTES=20000000
while (($#)); do
    case "$1" in
        --quick) FUZZ=30000; SOAK=30; DOWN=6; FLOOD=6; BYTES=2000000 ;;
        --out) OUT=$2; shift ;;
        --fuzz-inputs) FUZZ=$2; shift ;;
        --soak-seconds) SOAK=$2; shift ;;
        *) echo "usage: $0 [--quick] [--out FILE] [--fuzz-inputs N] [--soak-seconds S]" >&2; exit 2 ;;
    esac
    shift
done

bash scripts/setup.sh
OUT=$(realpath -m "$OUT")
: >"$OUT"
echo "reliability: figures -> $OUT" >&2

echo "== fuzz: $FUZZ inputs per target" >&2
.venv/bin/python bench/fuzz.py --inputs "$FUZZ" | tee -a "$OUT"

echo "== namespace runs (soak ${SOAK}s, outage ${DOWN}s, flood phases ${FLOOD}s, transfers ${BYTES} B)" >&2
LOG="${OUT%.jsonl}.log"
set +e
WGPY_RELIABILITY_REPORT="$OUT" WGPY_SOAK_SECONDS="$SOAK" WGPY_LINK_DOWN_SECONDS="$DOWN" \
WGPY_FLOOD_SECONDS="$FLOOD" WGPY_FAULT_BYTES="$BYTES" WGPY_IT_TEST_TIMEOUT=$((SOAK + 600)) \
    .venv/bin/python -m pytest -q -s -p no:cacheprovider \
    tests/integration/test_hostile_network.py tests/integration/test_reliability.py \
    tests/integration/test_hostile_secrets.py >"$LOG" 2>&1
rc=$?
set -e
grep -E '^FIGURES|passed|failed|^E ' "$LOG" || true
if grep -q '"violation"' "$OUT"; then
    echo "reliability: the fuzzer found a violation" >&2
    rc=1
fi
echo "reliability: pytest status $rc; figures in $OUT, pytest output in $LOG" >&2
exit "$rc"
