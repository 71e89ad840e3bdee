#!/usr/bin/env bash
# Creates (once) the private Python environment of the Ray test tiers and prints its path.
#
#   tools/ray-venv.sh          creates or reuses ${GISMO_RAY_VENV:-target/ray-venv}
#
# It holds `ray` (pinned: RAY_VERSION, from the Python registry), NumPy, pyarrow, pandas and fsspec
# (what Ray Data needs: the extra `ray[data]` of Ray 2.60 asks for pyarrow>=17, pandas>=2.2.3),
# pytest and maturin, and nothing from the system Python. Idempotent: a venv whose stamp names the same requirements is
# reused as is.
set -euo pipefail
cd "$(dirname "$0")/.."

RAY_VERSION=${RAY_VERSION:-2.60.0}
venv=${GISMO_RAY_VENV:-$PWD/target/ray-venv}
requirements=("ray==$RAY_VERSION" "numpy<3" "pyarrow>=17,<27" "pandas>=2.2.3,<4" "fsspec"
    "pytest>=8" "maturin>=1.7,<2")
stamp="$venv/.gismo-requirements"

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${requirements[*]}" ]; then
    echo "$venv"
    exit 0
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "ray-venv.sh: $python has no venv/ensurepip module (apt-get install python3-venv)" >&2
    exit 1
fi
rm -rf "$venv"
"$python" -m venv "$venv" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${requirements[@]}" >&2
echo "${requirements[*]}" >"$stamp"
echo "$venv"
