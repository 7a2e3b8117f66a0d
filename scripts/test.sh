#!/usr/bin/env bash
# The whole test suite: the Rust workspace, then the Python package built from python/ into a
# venv outside the clone and its pytest suite. `.ci/run` makes that venv (with torch for the
# PyTorch bridge); elsewhere name yours with SHEARS_VENV, or the Python part says it skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shears/target}"

# The binding crate is built (and so checked) by `pip install ./python` below; leaving it out of
# this build keeps one feature set for the shared dependencies (pyo3's would rebuild Burn).
cargo test --workspace --release --exclude shears-py

VENV="${SHEARS_VENV:-$HOME/.cache/shears/venv}"
if [ ! -x "$VENV/bin/python" ] \
   || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1 \
   || ! "$VENV/bin/python" -c "import pytest, numpy" >/dev/null 2>&1; then
  echo "SKIPPED: the Python tests: no usable venv at $VENV (one with pip, pytest and numpy;" \
       "make one: python3 -m venv $VENV && $VENV/bin/pip install maturin pytest numpy onnx" \
       "onnxruntime torch torchvision; or set SHEARS_VENV)"
  exit 0
fi
# The venv's tools (maturin) on the PATH, as an activated venv has them.
export PATH="$VENV/bin:$PATH"
# `pip install ./python` builds the extension with the same target directory as the tests, so
# only the binding crate compiles here.
if "$VENV/bin/python" -c "import maturin" >/dev/null 2>&1; then
  "$VENV/bin/pip" install -q --no-build-isolation ./python
else
  "$VENV/bin/pip" install -q ./python
fi
# From the tests' folder, so that `import shears` is the installed package.
(cd python/tests && "$VENV/bin/python" -m pytest -q -p no:cacheprovider .)
