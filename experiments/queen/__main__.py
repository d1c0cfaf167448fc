"""``python -m experiments.streaming_llm`` is ``streamlab reproduce streaming_llm`` (same flags)."""

import sys
from pathlib import Path

from shared.cli import main

sys.exit(main(["reproduce", Path(__file__).resolve().parent.name, *sys.argv[1:]]))
