"""``python -m experiments._template`` is ``streamlab reproduce _template`` (same flags)."""

import sys
from pathlib import Path

from shared.cli import main

sys.exit(main(["reproduce", Path(__file__).resolve().parent.name, *sys.argv[1:]]))
