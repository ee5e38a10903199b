#!/usr/bin/env bash
# Set up .venv (if needed) with forcomp and the demo extra only (scikit-image's sample photos), build
# a cache from those photos with the weight-free default backends, and write a preview grid.
# Output goes to ${1:-demo_out}.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" demo
cd "$root"
exec .venv/bin/python -m forcomp demo --out "${1:-demo_out}"
