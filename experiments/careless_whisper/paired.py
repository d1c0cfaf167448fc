"""Two ``generalise --out`` files compared file by file: is B better than A, beyond the noise?

    python -m experiments.careless_whisper.paired A.json B.json [--row careless_whisper]

For every set both files scored (``asterisk``, ``other_speakers``, ``validation``), the WER of the
row in A and in B and the paired difference B - A with its bootstrap standard error over files (the
same files drawn for both), read "resolved" only beyond two standard errors. A and B are typically
two adapters, two decoding settings or two recipes' trainings, run on the same files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from shared.errors import StreamlabError


def compare(a: dict, b: dict, row: str) -> list[dict]:
    """Per set both hold with ``row``: WERs and B - A (points, bootstrap s.e.). The files must be the
    same (names and references), else the comparison is refused."""
    from .metrics import paired_difference

    out = []
    for name in ("asterisk", "other_speakers", "validation"):
        if name not in a or name not in b or row not in a[name] or row not in b[name]:
            continue
        if a[name]["names"] != b[name]["names"] or a[name]["references"] != b[name]["references"]:
            raise StreamlabError(f"{name}: the two files scored different recordings; pair only runs on the same files")
        ra, rb = a[name][row], b[name][row]
        words = np.array([len(r.split()) for r in _normalised(a[name]["references"])])
        diff, se = paired_difference(np.array(rb["errors"]), np.array(ra["errors"]), words)
        out.append({"set": name, "wer_a": ra["wer"], "wer_b": rb["wer"], "b_minus_a": diff, "se": se, "resolved": abs(diff) > 2 * se})
    if not out:
        raise StreamlabError(f"no set holds row {row!r} in both files")
    return out


def _normalised(references: list[str]) -> list[str]:
    from .metrics import normalise

    return [normalise(r) for r in references]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.careless_whisper.paired", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--row", default="careless_whisper")
    args = parser.parse_args(argv)
    try:
        loaded = []
        for path in (args.a, args.b):
            try:
                loaded.append(json.loads(path.read_text()))
            except (OSError, ValueError) as err:
                raise StreamlabError(f"{path}: not a generalise --out file ({err})") from err
        rows = compare(*loaded, args.row)
    except StreamlabError as err:
        print(f"paired: error: {err}", file=sys.stderr)
        return 2
    for r in rows:
        verdict = "resolved" if r["resolved"] else "not resolved"
        print(f"{r['set']:15s} {args.row}: A {r['wer_a']:6.2f} %  B {r['wer_b']:6.2f} %  B - A {r['b_minus_a']:+6.2f} ± {r['se']:.2f} ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
