#!/usr/bin/env bash
# Fails when the notebooks are not clean or aacnb/ has drifted from nbs/: nbdev_clean (which strips execution
# counts and metadata, and keeps outputs: settings.ini clear_all = False) and nbdev_export must leave git status
# as it was (the notebooks are the source; aacnb/ is generated from them). Outputs are allowed only in the
# teaching notebooks listed in scripts/run_lessons.py (LESSONS), within its size budget.
set -euo pipefail
venv=${1:-.venv}
before=$(git status --porcelain -- nbs aacnb)
"$venv/bin/nbdev_clean" >/dev/null
"$venv/bin/nbdev_export"
after=$(git status --porcelain -- nbs aacnb)
if [ "$before" != "$after" ]; then
  echo "check_notebooks: nbdev_clean/nbdev_export changed files; clean the notebooks and export, then commit:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
"$venv/bin/python" scripts/run_lessons.py --check
echo "check_notebooks: notebooks clean, outputs only in the lessons, aacnb/ in sync with nbs/"
"$venv/bin/python" scripts/make_readme.py --check
