#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh), then runs the test suite with pytest.
# Extra arguments go to pytest; when they name test files or directories,
# only those run, otherwise the whole of tests/.
#
#   bash scripts/test.sh
#   bash scripts/test.sh -x -q tests/test_core_reference.py
#   bash scripts/test.sh -k padding_mode
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh

paths_given=0
for arg in "$@"; do
    case "$arg" in
        -*) ;;
        *) if [ -e "${arg%%::*}" ]; then paths_given=1; fi ;;
    esac
done
targets=()
if [ "$paths_given" = 0 ]; then
    targets=(tests)
fi

echo "[test] python -m pytest ${targets[*]} -q -ra --durations=20 $*"
status=0
"$root/.venv/bin/python" -m pytest "${targets[@]}" -q -ra --durations=20 "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "[test] FAILED: pytest collected no tests (exit code 5)" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "[test] FAILED: pytest exited with code $status" >&2
fi
exit "$status"
