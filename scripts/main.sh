#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh), then runs the main job: the cross-framework
# consistency check, `python -m pytconv check`, on its built-in default set of
# convolutions. Extra arguments go to the check (`--help` lists them).
#
#   bash scripts/main.sh
#   bash scripts/main.sh --quick --frameworks torch
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
echo "[main] python -m pytconv check $*"
exec "$root/.venv/bin/python" -m pytconv check "$@"
