#!/usr/bin/env bash
# Fails when the notebooks carry outputs or aacnb/ has drifted from nbs/: nbdev_clean and nbdev_export
# must leave git status as it was (the notebooks are the source; aacnb/ is generated from them).
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
echo "check_notebooks: notebooks clean, aacnb/ in sync with nbs/"
"$venv/bin/python" scripts/make_readme.py --check
