"""Ship a run's trained adapters as the transcriber's defaults, with their provenance:

    python -m experiments.careless_whisper.ship outputs/careless_whisper/<run> [--chunks 300 1000]

Copies ``RUN/adapters/<ms>ms/adapter`` (peft's adapter_config.json and adapter_model.safetensors,
a few MB each) to ``experiments/careless_whisper/adapters/<model>/<ms>ms/`` and writes into its
``careless_whisper.json`` where it came from: the commit and command of the run, its date, the
training data and the WER it measured at that chunk size (Asterisk test split and other speakers).
A run with uncommitted changes is refused: its adapters could not be made again.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

from shared.errors import StreamlabError

from .tool import SHIPPED

DATA = ("409 aligned Asterisk training prompts (Debian asterisk-core-sounds-en-wav, Allison Smith, telephone band) "
        "and training streams of them back to back (train.streams); speed perturbation 0.9/1.0/1.1")


def ship(run: Path, chunks: list[int], dest_root: Path = SHIPPED) -> list[Path]:
    provenance = json.loads((run / "provenance.json").read_text())
    if provenance["git"]["dirty"]:
        raise StreamlabError(f"{run} ran on uncommitted changes (git.diff): re-run it from a clean commit before shipping its adapters")
    results = {(r["row"], r["metric"]): float(r["value"]) for r in csv.DictReader((run / "results.csv").open())}
    shipped = []
    for chunk_ms in chunks:
        source = run / "adapters" / f"{chunk_ms}ms" / "adapter"
        if not (source / "adapter_model.safetensors").is_file():
            raise StreamlabError(f"{run} has no trained {chunk_ms} ms adapter ({source})")
        meta = json.loads((source / "careless_whisper.json").read_text())
        dest = dest_root / meta["model"] / f"{chunk_ms}ms"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(source / name, dest / name)
        wer = {k: results.get(("careless_whisper", f"{k}_{chunk_ms}ms")) for k in ("wer", "wer_other", "lag_s", "lag_s_other")}
        meta["provenance"] = {"commit": provenance["git"]["sha"], "command": " ".join(provenance["command"]), "date": provenance["date"],
                              "run": run.name, "data": DATA, "wer": wer,
                              "wer_offline": {"wer": results.get(("offline", "wer")), "wer_other": results.get(("offline", "wer_other"))}}
        (dest / "careless_whisper.json").write_text(json.dumps(meta, indent=1) + "\n")
        shipped.append(dest)
    return shipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.careless_whisper.ship", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--chunks", type=int, nargs="+", default=[300, 1000])
    args = parser.parse_args(argv)
    try:
        for path in ship(args.run, args.chunks):
            print(f"ship: {path}")
    except (StreamlabError, OSError, KeyError) as err:
        print(f"ship: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
