#!/usr/bin/env bash
# Runs Python tests against a copy of the extension built with
# AddressSanitizer + UndefinedBehaviorSanitizer (CMake option PYTCONV_SANITIZE),
# with the ASan runtime preloaded into the (uninstrumented) Python interpreter.
#
#   tests/c/run_python_asan.sh [BUILD_DIR] [pytest arguments...]
#
# The installed package is left alone: the sanitized _core and symlinks to the
# package's Python files go to BUILD_DIR/site, which is put first on
# PYTHONPATH; a sitecustomize there turns off the editable-install redirect so
# that `import pytconv` finds that copy. Leak detection is off (the
# interpreter itself keeps memory until exit); everything else aborts the run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-$root/build/sanitize/asan}"
shift || true
mkdir -p "$build"
build="$(cd "$build" && pwd)"
# The project's environment (scripts/setup.sh) when there is one: its Python
# has the frameworks the tests need; else $PYTHON, else python on PATH.
if [ -z "${PYTHON:-}" ] && [ -x "$root/.venv/bin/python" ]; then
    PYTHON="$root/.venv/bin/python"
fi
python="${PYTHON:-python}"
cc="${CC:-cc}"
cmake_build="$build/python-ext"
site="$build/site"

cmake -S "$root" -B "$cmake_build" -G Ninja -DPYTCONV_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DPython_EXECUTABLE="$(command -v "$python")" >/dev/null
cmake --build "$cmake_build" >/dev/null
ext="$(ls "$cmake_build"/_core*.so)"

rm -rf "$site"
mkdir -p "$site/pytconv"
for entry in "$root"/pytconv/*; do
    case "$(basename "$entry")" in
        _core*.so|__pycache__) ;;
        *) ln -s "$entry" "$site/pytconv/" ;;
    esac
done
cp "$ext" "$site/pytconv/"
# The adapters, found through the same path (the editable redirect is off).
for adapter in "$root"/adapters/*/; do
    ln -s "${adapter%/}" "$site/"
done
cat >"$site/sitecustomize.py" <<'PY'
# Drop the editable-install finder so that this directory's pytconv (with the
# sanitized extension) is the one imported.
import sys

sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__name__.startswith("ScikitBuild")]
PY

asan_lib="$("$cc" -print-file-name=libasan.so)"
# libstdc++ right after it, so that ASan's __cxa_throw interceptor finds the
# real one (C++ exceptions thrown by PyTorch otherwise abort in ASan).
cxx_lib="$("$cc" -print-file-name=libstdc++.so.6)"
export LD_PRELOAD="$asan_lib $cxx_lib"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
# allocator_may_return_null: huge requests (tests/test_limits.py) must fail
# with NULL -> MemoryError, as they do without ASan.
# Reports go to files: pytest captures the process's stderr, and a report
# written there is lost when the sanitizer ends the process.
reports="$build/python-asan-report"
rm -f "$reports".*
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1:log_path=$reports"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports"
export PYTCONV_FUZZ_EXAMPLES="${PYTCONV_FUZZ_EXAMPLES:-600}"

if [ $# -eq 0 ]; then
    # PyTorch runs under ASan too (the core is instrumented, torch is not), so
    # the torch adapter's use of the core is checked; TensorFlow is left out.
    set -- "$root/tests/test_fuzz.py" "$root/tests/test_threads.py" "$root/tests/test_limits.py" \
        "$root/tests/test_interrupt.py" "$root/tests/test_adapter_boundaries.py" \
        "$root/tests/test_core_paths.py" -m "not slow" -k "not tf_"
fi
# Test paths made absolute: pytest runs from inside $site, because the current
# directory comes first on sys.path and the repository root would shadow the copy.
args=()
for a in "$@"; do
    if [ -e "$a" ]; then args+=("$(cd "$(dirname "$a")" && pwd)/$(basename "$a")"); else args+=("$a"); fi
done
cd "$site"
"$python" -c "import pytconv._core as c, sys; f = c.__file__; print('sanitized extension:', f); sys.exit(0 if f.startswith('$site') else 1)"

log="$build/python-asan.log"
status=0
"$python" -m pytest -q -p no:cacheprovider --rootdir "$root" "${args[@]}" >"$log" 2>&1 || status=$?
tail -n 3 "$log"
# The report files also hold ASan's warnings about refused huge allocations
# (expected: tests/test_limits.py asks for them); errors are what fail.
for report in "$reports".*; do
    [ -e "$report" ] || continue
    if grep -Eq 'ERROR: AddressSanitizer|runtime error:|CHECK failed' "$report"; then
        echo "sanitizer report: $report" >&2
        grep -E -m 1 -A 40 'ERROR: AddressSanitizer|runtime error:|CHECK failed' "$report" >&2
        status=1
    fi
done
exit $status
