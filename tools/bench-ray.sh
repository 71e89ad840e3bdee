#!/usr/bin/env bash
# Ray's own numbers on this machine (opt-in; about two minutes): makes the private Ray venv
# (tools/ray-venv.sh) and writes target/bench/ray.json, which `gismo-bench report` includes.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash tools/ray-venv.sh)
mkdir -p target/bench
GISMO_RAY_TEMP=/tmp/gismo-ray-bench-$$ RAY_ADDRESS=local \
    "$venv/bin/python" tools/bench-ray.py target/bench/ray.json
echo "wrote target/bench/ray.json"
