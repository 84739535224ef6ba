#!/usr/bin/env bash
# Run HERE (the CPU machine, network to the package registry), from any directory, before a device call:
# builds .whl/ with the wheels ci/gpu.sh installs on the GPU machine, which cannot reach any registry.
# The device image already has CuPy, torch (with cuDNN), NumPy, pytest, pytest-timeout and hypothesis,
# but not array-api-compat, array-api-strict or arrayrnn itself. Then call the device tool with
# carry [".whl"] (see ci/gpu.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# python3 on the device image: 3.12 (seen there 2026-11: Python 3.12.3). Change here if the image moves.
# The three wheels are pure Python (py3-none-any), so this only has to satisfy their requires-python.
DEVICE_PYTHON_VERSION="${DEVICE_PYTHON_VERSION:-3.12}"

# The versions this project is tested with on the CPU machine (falls back to the newest).
pin() {
  python3 - "$1" <<'PY'
import importlib.metadata, sys
try:
    print(f"{sys.argv[1]}=={importlib.metadata.version(sys.argv[1])}")
except importlib.metadata.PackageNotFoundError:
    print(sys.argv[1])
PY
}

rm -rf .whl
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON_VERSION" \
  --implementation cp --platform manylinux_2_28_x86_64 -d .whl \
  "$(pin array-api-compat)" "$(pin array-api-strict)"
python3 -m pip wheel -q --no-deps -w .whl .
# the commit the wheels were built from (the device machine's .git is not this checkout's): gpu.sh reads it
commit="$(git rev-parse HEAD)"
git diff --quiet HEAD -- src benchmarks ci tests || commit="$commit+dirty"
echo "$commit" >.whl/COMMIT
echo "ci/gpu-prepare.sh: wheels for the device machine (Python $DEVICE_PYTHON_VERSION):"
ls -l .whl
du -sh .whl
git status --short --ignored .whl | grep -q '^!!' || echo "WARNING: .whl/ is not ignored by git; add /.whl/ to .gitignore"
