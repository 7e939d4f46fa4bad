#!/usr/bin/env bash
# Builds the C core and its test driver (tests/c/test_core.c) with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs the driver once per
# kernel set (PYTCONV_SIMD=generic, avx2, and unset = the best this CPU has).
# Any sanitizer report aborts the run with a non-zero status.
#
#   scripts/sanitize.sh                 # sanitized build, all kernel sets
#   scripts/sanitize.sh --cases 10000   # more random problems per kernel set (default 3000)
#   scripts/sanitize.sh --no-sanitize   # the same driver in an optimised build (-O2)
#   scripts/sanitize.sh --thread        # ThreadSanitizer instead (data races between the core's threads)
#   scripts/sanitize.sh --python        # also run Python tests on a sanitized extension
#
# Environment: CC (default cc), BUILD_DIR (default build/sanitize), SEED.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cc="${CC:-cc}"
build="${BUILD_DIR:-$root/build/sanitize}"
cases=3000
seed="${SEED:-20260101}"
sanitize=1
python_tests=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cases) cases="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --no-sanitize) sanitize=0; shift ;;
        --thread) sanitize=thread; shift ;;
        --python) python_tests=1; shift ;;
        -h|--help) sed -n "2,13p" "$0"; exit 0 ;;
        *) echo "sanitize.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ "$sanitize" = 1 ]; then
    flags=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1)
    build="$build/asan"
elif [ "$sanitize" = thread ]; then
    flags=(-fsanitize=thread -fno-omit-frame-pointer -g -O1)
    build="$build/tsan"
else
    flags=(-O2 -g)
    build="$build/plain"
fi
flags+=(-std=c11 -Wall -Wextra -Werror -I"$root/src_c")
mkdir -p "$build"

# The ISA kernels are built where the compiler supports them, as in
# src_c/CMakeLists.txt; the dispatcher then picks one at run time.
supports() { echo 'int main(void){return 0;}' | "$cc" "$@" -x c -o /dev/null - >/dev/null 2>&1; }
defines=()
# The portable sources are those of add_library(pytconv_core ...) in
# src_c/CMakeLists.txt, so this build follows the CMake one.
read -r -a sources <<<"$(sed -n '/add_library(pytconv_core/,/)/p' "$root/src_c/CMakeLists.txt" |
    tr ' ()' '\n\n\n' | grep '\.c$' | tr '\n' ' ')"
if [ "${#sources[@]}" -eq 0 ]; then
    echo "sanitize.sh: no sources found in src_c/CMakeLists.txt" >&2
    exit 2
fi
if supports -mavx2 -mfma; then defines+=(-DPTC_HAVE_AVX2); sources+=(kernel_avx2.c); fi
if supports -mavx512f -mfma; then defines+=(-DPTC_HAVE_AVX512); sources+=(kernel_avx512.c); fi

objects=()
for src in "${sources[@]}"; do
    isa=()
    case "$src" in
        kernel_avx2.c) isa=(-mavx2 -mfma) ;;
        kernel_avx512.c) isa=(-mavx512f -mfma) ;;
    esac
    obj="$build/${src%.c}.o"
    "$cc" "${flags[@]}" "${defines[@]}" "${isa[@]}" -c "$root/src_c/$src" -o "$obj"
    objects+=("$obj")
done
"$cc" "${flags[@]}" "${defines[@]}" -c "$root/tests/c/test_core.c" -o "$build/test_core.o"
"$cc" "${flags[@]}" -o "$build/test_core" "$build/test_core.o" "${objects[@]}" -lpthread -lm
echo "built $build/test_core (${sources[*]})"

# Sanitizer reports end the process with an error; leaks are reported too.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:halt_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"

status=0
for simd in generic avx2 unset; do
    log="$build/test_core.$simd.log"
    if [ "$simd" = unset ]; then
        env -u PYTCONV_SIMD "$build/test_core" --cases "$cases" --seed "$seed" >"$log" 2>&1 || true
    else
        PYTCONV_SIMD="$simd" "$build/test_core" --cases "$cases" --seed "$seed" >"$log" 2>&1 || true
    fi
    head -n 1 "$log"
    tail -n 2 "$log"
    # Success is the driver's own last line with no failure and no sanitizer
    # report anywhere in the log.
    if ! tail -n 1 "$log" | grep -Eq '^[0-9]+ passed, 0 failed$' ||
        grep -Eq 'ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer|runtime error:|SUMMARY: ' "$log"; then
        echo "FAILED (PYTCONV_SIMD=$simd): see $log" >&2
        grep -E -m 20 'FAIL|ERROR|runtime error|SUMMARY' "$log" >&2 || true
        status=1
    fi
done

if [ "$python_tests" = 1 ] && [ "$sanitize" = 1 ]; then
    "$root/tests/c/run_python_asan.sh" "$build" || status=1
fi
exit $status
