#!/usr/bin/env bash
# Make the environments in which fusekit's tests and benchmarks run Brian2 and Jaxley.
#
#   .venv-brian2  a plain venv: brian2 2.9.0 with numpy < 2.4. Brian2 2.9.0 (the newest on
#                 PyPI) wraps np.ndarray.ptp when it is imported, and NumPy 2.4 removed that
#                 method (fixed in Brian2's main branch, brian-team/brian2#1705, not released).
#   .venv-jaxley  a venv on top of this Python's packages (--system-site-packages): jaxley
#                 0.14.0 adds jax, jaxlib, pandas and tridiax there, not to fusekit's Python.
#
# Idempotent: an environment that already imports its package at the pinned version is left
# alone (about 2 s for both). From scratch: about 10 s (brian2) and 30 s (jaxley) from a warm
# pip cache, plus the downloads (about 30 MB and 100 MB) on a fresh machine.
# Usage: bash peers/setup.sh [brian2] [jaxley]     (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export PIP_DISABLE_PIP_VERSION_CHECK=1

ready() {  # ready VENV MODULE VERSION
    [ -x "$1/bin/python" ] && "$1/bin/python" -c \
        "import $2, sys; sys.exit(0 if $2.__version__ == '$3' else 1)" >/dev/null 2>&1
}

make_brian2() {
    if ready .venv-brian2 brian2 2.9.0; then echo "peers: .venv-brian2 ready"; return; fi
    rm -rf .venv-brian2
    "$PYTHON" -m venv .venv-brian2
    .venv-brian2/bin/python -m pip install -q "brian2==2.9.0" "numpy>=2,<2.4"
    ready .venv-brian2 brian2 2.9.0
    echo "peers: made .venv-brian2"
}

make_jaxley() {
    if ready .venv-jaxley jaxley 0.14.0; then echo "peers: .venv-jaxley ready"; return; fi
    rm -rf .venv-jaxley
    "$PYTHON" -m venv --system-site-packages .venv-jaxley
    .venv-jaxley/bin/python -m pip install -q "jaxley==0.14.0"
    ready .venv-jaxley jaxley 0.14.0
    echo "peers: made .venv-jaxley"
}

for peer in "${@:-brian2 jaxley}"; do
    for p in $peer; do "make_$p"; done
done
