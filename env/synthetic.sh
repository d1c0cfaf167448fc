#!/usr/bin/env bash
# Synthetic training speech for CarelessWhisper (experiments/careless_whisper/synthetic.py): the
# flite synthesiser with its four Arctic voices (Debian flite + libflite1) and English sentences
# from Debian's fortune cookies (fortunes), unpacked without root into $VENV/share/synthetic.
# Training data only, never a test set. Called by env/setup.sh; safe to re-run; never fails the setup.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
DEST="$VENV/share/synthetic"
if [[ -x "$DEST/usr/bin/flite" && -f "$DEST/usr/share/games/fortunes/literature" ]]; then
  exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
  echo "env/synthetic.sh: apt-get is not available; CarelessWhisper trains without synthetic voices (train.synthetic=null)" >&2
  exit 0
fi
source env/debs.sh
unpack_debs "$DEST" flite libflite1 fortunes fortunes-min || {
  echo "env/synthetic.sh: apt-get download failed (no package index? run 'apt-get update'); synthetic voices not installed" >&2
  exit 0
}
echo "env/synthetic.sh: flite and the fortunes sentences in $DEST"
