#!/usr/bin/env bash
# Sets up a development environment in .venv at the repository root: creates
# the virtual environment if missing, installs the runtime, test and build
# dependencies, and builds and installs pytconv (editable) into it.
#
#   bash scripts/setup.sh          # idempotent: steps already done are skipped
#   PYTHON=python3.12 bash scripts/setup.sh
#
# A step is skipped when a stamp in .venv records that it ran on the same
# inputs: the dependency list (this file) for the installs, the C sources,
# the Cython bridge and the build files for the build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
venv="$root/.venv"

# PyTorch is pinned: 2.13.0 resolves to the CPU wheel the machines provide,
# while an unpinned torch would pull several GB of CUDA packages.
packages=(
    "torch==2.13.0"
    tensorflow-cpu
    "jax[cpu]"
    numpy scipy hypothesis pytest psutil matplotlib
    scikit-build-core cython ninja cmake
)

say() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
else
    say "using $venv ($("$venv/bin/python" --version 2>&1))"
fi
py="$venv/bin/python"

hash_of() { sha256sum | cut -d' ' -f1; }

deps_hash="$(printf '%s\n' "${packages[@]}" | hash_of)"
deps_stamp="$venv/.pytconv-deps"
if [ -f "$deps_stamp" ] && [ "$(cat "$deps_stamp")" = "$deps_hash" ]; then
    say "dependencies already installed"
else
    say "upgrading pip"
    "$py" -m pip install --upgrade pip
    say "installing: ${packages[*]}"
    "$py" -m pip install "${packages[@]}"
    echo "$deps_hash" > "$deps_stamp"
fi

build_hash="$( { cat pyproject.toml CMakeLists.txt pytconv/_core.pyx;
                 find src_c -type f | LC_ALL=C sort | xargs cat; } | hash_of)"
build_stamp="$venv/.pytconv-build"
if [ -f "$build_stamp" ] && [ "$(cat "$build_stamp")" = "$build_hash" ] \
        && "$py" -c "import pytconv._core" 2>/dev/null; then
    say "pytconv already built from these sources"
else
    say "building and installing pytconv (editable)"
    "$py" -m pip install --no-build-isolation -e .
    echo "$build_hash" > "$build_stamp"
fi

say "ready: $("$py" -c 'import pytconv, pytconv._core as c; print("pytconv", pytconv.__version__, "SIMD", c.simd_level())')"
say "activate with: . $venv/bin/activate"
