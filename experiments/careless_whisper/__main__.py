"""``python -m experiments.careless_whisper`` is ``streamlab reproduce careless_whisper`` (same flags)."""

import sys
from pathlib import Path

from shared.cli import main

sys.exit(main(["reproduce", Path(__file__).resolve().parent.name, *sys.argv[1:]]))
