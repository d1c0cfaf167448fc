"""``python -m experiments.stdo``:

    python -m experiments.stdo fit VIDEO --scale 4 --chunks 4 [--out BUNDLE]     # overfit a bundle to a video
    python -m experiments.stdo upscale LOWRES_VIDEO BUNDLE OUT.mp4                # upscale with a bundle
    python -m experiments.stdo [--preset P] [key=value ...]                       # = streamlab reproduce stdo
"""

import sys
from pathlib import Path

if len(sys.argv) > 1 and sys.argv[1] in ("fit", "upscale"):
    from .tool import main as tool_main

    sys.exit(tool_main(sys.argv[1:]))

from shared.cli import main

sys.exit(main(["reproduce", Path(__file__).resolve().parent.name, *sys.argv[1:]]))
