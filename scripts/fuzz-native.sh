#!/usr/bin/env bash
# Fuzz the native data path under AddressSanitizer: wgpy._crypto (src/native/crypto.c) and wgpy._offload
# (src/native/offload.c).
#
#   scripts/fuzz-native.sh [SECONDS] [SEED] [TARGETS]     (default 30 s per target, seed 1, crypto,offload)
#
# Builds the extensions with WGPY_NATIVE_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g -O1" into a
# temporary directory (the in-place build in src/wgpy/ is left alone), lays a copy of the wgpy package beside
# them, and runs wgpy_testkit.datapath.fuzz with that copy first on PYTHONPATH, libasan preloaded (the
# interpreter itself is not instrumented) and PYTHONMALLOC=malloc (so a byte past a bytes object's end is
# caught, not hidden in a pymalloc arena).
# crypto: wgpy_testkit.datapath.fuzz feeds Aead, Replay, seal_batch and open_run random and
# hostile arguments (bytearrays, memoryview slices, non-buffers, truncated, reordered, replayed and forged
# messages, odd MTUs and counters) and compares them with the pure-Python functions, then runs Device-level
# scenarios through both paths. offload: bench/fuzz_offload.py --module (its docstring says what it feeds).
# Exit 0 and one JSON line of counts per target when nothing was found; ASan's report and a non-zero exit
# otherwise.
set -euo pipefail

SECONDS_TO_RUN=${1:-30}
SEED=${2:-1}
TARGETS=${3:-crypto,offload}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wgpy-fuzz-native.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

LIBASAN=$(gcc -print-file-name=libasan.so)
[ -e "$LIBASAN" ] || { echo "fuzz-native: libasan not found (install gcc)" >&2; exit 2; }

echo "fuzz-native: building with AddressSanitizer in $TMP" >&2
(cd "$ROOT" && WGPY_NATIVE_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g -O1" \
    "$PY" setup.py -q build_ext --build-lib "$TMP/lib" --build-temp "$TMP/build" >"$TMP/build.log" 2>&1) \
    || { cat "$TMP/build.log" >&2; exit 2; }
for t in ${TARGETS//,/ }; do
    ls "$TMP"/lib/wgpy/_"$t"*.so >/dev/null 2>&1 || { cat "$TMP/build.log" >&2; echo "fuzz-native: wgpy._$t did not build" >&2; exit 2; }
done
# the package's Python files beside the instrumented modules (not the uninstrumented in-place .so files)
(cd "$ROOT/src/wgpy" && tar -cf - --exclude='*.so' --exclude=__pycache__ .) | tar -xf - -C "$TMP/lib/wgpy"

export LD_PRELOAD="$LIBASAN" ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1" PYTHONMALLOC=malloc
export PYTHONPATH="$TMP/lib:$ROOT/src" WGPY_NATIVE=1
cd "$TMP"
for t in ${TARGETS//,/ }; do
    echo "fuzz-native: $t for ${SECONDS_TO_RUN}s, seed $SEED" >&2
    case $t in
    crypto)
        "$PY" -c "
import json
import wgpy._crypto as c
assert c.__file__.startswith('$TMP/lib/'), c.__file__     # the instrumented build, not src/wgpy's
from wgpy_testkit.datapath import fuzz, scenario, pure
stats = fuzz($SECONDS_TO_RUN, $SEED)
native = [scenario(s) for s in range(3)]
with pure():
    assert native == [scenario(s) for s in range(3)], 'the Device-level scenarios differ'
print(json.dumps(dict(stats, target='crypto', seconds=$SECONDS_TO_RUN, seed=$SEED, module=c.__file__)))
" ;;
    offload)
        "$PY" "$ROOT/bench/fuzz_offload.py" --seconds "$SECONDS_TO_RUN" --seed "$SEED" --module "$TMP/lib/wgpy" ;;
    *)
        echo "fuzz-native: unknown target $t (crypto, offload)" >&2; exit 2 ;;
    esac
done
