#!/usr/bin/env bash
# Build or refresh the project's virtual environment in .venv (behind `make setup`).
#
# Idempotent: the inputs that define the environment (Python version, env/requirements*.txt,
# env/constraints.txt, pyproject.toml) are hashed into .venv/.streamlab-stamp; when the hash is
# unchanged this script returns at once. An interrupted install leaves no stamp, so the next run
# simply installs again.
#
# Variables: PYTHON (interpreter to build the venv from; default python3.11, then python3),
#            VENV (default .venv), STREAMLAB_FORCE_SETUP=1 (reinstall even if up to date).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
STAMP="$VENV/.streamlab-stamp"

find_python() {
  for candidate in ${PYTHON:-} python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

PY=$(find_python) || {
  echo "env/setup.sh: StreamLab needs Python 3.11 (found: $(python3 --version 2>&1 || echo none))." >&2
  echo "  Install it (pyenv install 3.11, or conda: see environment.yml) or set PYTHON=/path/to/python3.11." >&2
  exit 1
}

fingerprint() {
  { "$PY" -c 'import sys; print(sys.version)'; cat env/debs.sh env/speech.sh env/synthetic.sh env/requirements.txt env/requirements-nodeps.txt env/requirements-cpu.txt env/constraints.txt pyproject.toml; } | sha256sum | cut -d' ' -f1
}
want=$(fingerprint)

if [[ -z "${STREAMLAB_FORCE_SETUP:-}" && -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "env/setup.sh: $VENV is up to date (nothing to do)."
  exit 0
fi

start=$SECONDS
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "env/setup.sh: creating $VENV with $PY"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi
rm -f "$STAMP"
echo "env/setup.sh: installing pinned requirements into $VENV (first time: a few minutes)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r env/requirements.txt -c env/constraints.txt
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r env/requirements-nodeps.txt
if "$VENV/bin/python" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)'; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r env/requirements-cpu.txt -c env/constraints.txt
fi
# Editable install: the import roots are the repo folders themselves (shared, kernels, experiments),
# so edits take effect without reinstalling; it also provides the `streamlab` console script.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
VENV="$VENV" bash env/speech.sh
VENV="$VENV" bash env/synthetic.sh
echo "$want" > "$STAMP"
echo "env/setup.sh: $VENV ready in $((SECONDS - start)) s ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
