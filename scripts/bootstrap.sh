#!/usr/bin/env bash
# Create .venv in the repo root if missing and install forcomp with the extras named in $1
# (default "dev,demo"). Idempotent: a stamp keyed on pyproject.toml skips work already done.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-dev,demo}"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
cd "$root"
if [ ! -x .venv/bin/python ]; then
  echo "[forcomp] creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
stamp=".venv/.forcomp-$(sha1sum pyproject.toml | cut -c1-12)-${extras//,/_}"
if [ -f "$stamp" ]; then exit 0; fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
# Pin torch to the builds that install from local disk here; a looser spec downloads several GB.
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  case "$(uname -m)" in
    x86_64) "${pip[@]}" install "torch==2.14.1" "torchvision==0.29.1" ;;
    aarch64|arm64) "${pip[@]}" install "torch==2.9.1" "torchvision==0.24.1" ;;
    *) "${pip[@]}" install torch torchvision ;;
  esac
fi
echo "[forcomp] installing forcomp[$extras] into .venv"
"${pip[@]}" install -e ".[$extras]"
touch "$stamp"
