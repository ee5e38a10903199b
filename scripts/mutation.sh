#!/usr/bin/env bash
# Mutation-test modules of forcomp with mutmut 3 and print a score per module.
#
#   scripts/mutation.sh                       # the modules listed in [tool.mutmut] only_mutate
#   scripts/mutation.sh forcomp/cache/index.py forcomp/metrics/scores.py
#   KEEP=1 scripts/mutation.sh ...            # reuse ./mutants (faster; stale if other modules changed)
#   JOBS=2                                    # parallel mutant workers (default 2: CI's and our machine's cores)
#   SUMMARY_ONLY=1 scripts/mutation.sh ...    # only print the scores of the last run
#
# The configuration (which modules may be mutated, which tests run) is [tool.mutmut] in pyproject.toml;
# mutmut runs each mutant against only the tests of that selection that reached the mutated function.
# Mutants judged equivalent (no test can tell them apart from the original) are listed with their reason
# in docs/mutation.md, in table rows that start with "| `<mutant name>`"; this script reads them from there.
# A module's score is killed / total, timeouts counting as killed (mutmut's own rule); the score without
# the documented equivalents is printed beside it. Exit status 1 when a module has an undocumented survivor.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MUTMUT=${MUTMUT:-.venv/bin/mutmut}
JOBS=${JOBS:-2}
# One torch/OpenMP thread per mutant worker: workers forked after torch ran spin on its thread pool,
# hit mutmut's CPU-time limit and count as "killed" (an equivalent mutant was, and each took ~8 s).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

if [[ $# -eq 0 ]]; then
    mapfile -t MODULES < <("$PY" -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["tool"]["mutmut"]["only_mutate"], sep="\n")')
else
    MODULES=("$@")
fi

# Every module must be in only_mutate, or mutmut silently creates no mutants for it.
"$PY" - "${MODULES[@]}" <<'EOF'
import fnmatch, sys, tomllib
allowed = tomllib.load(open("pyproject.toml", "rb"))["tool"]["mutmut"]["only_mutate"]
bad = [m for m in sys.argv[1:] if not any(fnmatch.fnmatch(m, p) for p in allowed)]
if bad:
    sys.exit(f"not in [tool.mutmut] only_mutate of pyproject.toml: {bad}; add them there (and their tests to "
             "pytest_add_cli_args_test_selection)")
EOF

PATTERNS=()
for m in "${MODULES[@]}"; do
    mod=${m%.py}
    PATTERNS+=("${mod//\//.}.*")
done

if [[ -z ${SUMMARY_ONLY:-} ]]; then
    if [[ -z ${KEEP:-} ]]; then
        # mutmut never re-copies a file that exists in ./mutants, so a stale copy of an unmutated module
        # would be tested; start from a fresh copy of the working tree.
        rm -rf mutants
    fi
    mkdir -p mutants
    echo '*' > mutants/.gitignore  # mutmut's work folder never enters git, whatever .gitignore says
    echo "mutmut $("$PY" -c 'import importlib.metadata as m; print(m.version("mutmut"))'): ${PATTERNS[*]}"
    # mutmut's progress spinner rewrites one line and it lists every killed mutant: keep the rest.
    "$MUTMUT" run --max-children "$JOBS" "${PATTERNS[@]}" | tr '\r' '\n' | grep -v -E '^(⠋|⠙|⠹|⠸|⠼|⠴|⠦|⠧|⠇|⠏|🎉)' || true
fi

"$PY" - "${MODULES[@]}" <<'EOF'
"""Per-module scores from mutmut's meta files, with the equivalents documented in docs/mutation.md."""
import json
import re
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3, 36, -24, 24, 152, 255}  # killed, pytest internal error, timeouts (mutmut's status table)
NAMES = {0: "survived", 33: "no tests", 5: "no tests", 34: "skipped", 35: "suspicious", None: "not checked"}
doc = Path("docs/mutation.md")
equivalent = {}
if doc.exists():
    for line in doc.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*`([^`]+__mutmut_\d+)`\s*\|(.*)\|\s*$", line)
        if m:
            equivalent[m.group(1)] = m.group(2).rsplit("|", 1)[-1].strip()  # the last cell: the reason
status = 0
for module in sys.argv[1:]:
    meta = Path("mutants") / (module + ".meta")
    if not meta.exists():
        print(f"{module}: no results in {meta} (run without SUMMARY_ONLY first)")
        status = 1
        continue
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    total = len(codes)
    killed = sum(1 for c in codes.values() if c in KILLED)
    alive = sorted((k for k, c in codes.items() if c not in KILLED), key=lambda k: (k.rsplit("_", 1)[0], int(k.rsplit("_", 1)[1])))
    eq = [k for k in alive if k in equivalent]
    open_ = [k for k in alive if k not in equivalent]
    score = 100.0 * killed / total if total else float("nan")
    adj = 100.0 * killed / (total - len(eq)) if total > len(eq) else float("nan")
    print(f"{module}: killed {killed}/{total} = {score:.1f} %  (without {len(eq)} equivalent: {adj:.1f} %)")
    for k in eq:
        print(f"    equivalent  {k}: {equivalent[k]}")
    for k in open_:
        print(f"    {NAMES.get(codes[k], codes[k]):11s} {k}   (mutmut show {k})")
    if open_:
        status = 1
sys.exit(status)
EOF
