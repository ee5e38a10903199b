#!/usr/bin/env bash
# Set up .venv (if needed) with forcomp and the extras the tests need (dev, demo) and run the whole
# test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" dev,demo
cd "$root"
exec .venv/bin/python -m pytest "$@"
