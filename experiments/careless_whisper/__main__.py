"""``python -m experiments.careless_whisper``:

    python -m experiments.careless_whisper transcribe AUDIO [--model tiny.en] [--chunk-ms 300] [--adapter DIR] [--beam N] [--json]
    python -m experiments.careless_whisper [--preset P] [key=value ...]      # = streamlab reproduce careless_whisper
"""

import sys
from pathlib import Path

if len(sys.argv) > 1 and sys.argv[1] == "transcribe":
    from .tool import main as tool_main

    sys.exit(tool_main(sys.argv[2:]))

from shared.cli import main

sys.exit(main(["reproduce", Path(__file__).resolve().parent.name, *sys.argv[1:]]))
