#!/usr/bin/env bash
# Set up .venv (if needed), build a cache from scikit-image's sample photos with the weight-free
# default backends, and write a preview grid. Output goes to ${1:-demo_out}.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" dev,demo
cd "$root"
exec .venv/bin/python -m forcomp demo --out "${1:-demo_out}"
