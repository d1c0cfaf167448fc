"""``python -m experiments.streamdit``:

    python -m experiments.streamdit bench [--arch 4b|small] [--res 512] [--chunk 2] [--steps 30] [--json]
    python -m experiments.streamdit [--preset P] [key=value ...]      # = streamlab reproduce streamdit
"""

import sys
from pathlib import Path

if len(sys.argv) > 1 and sys.argv[1] == "bench":
    from .bench import main as bench_main

    sys.exit(bench_main(sys.argv[2:]))

from shared.cli import main

sys.exit(main(["reproduce", Path(__file__).resolve().parent.name, *sys.argv[1:]]))
