"""Offline WER of packaged Whisper models on the Asterisk test split, paired by utterance:

    python -m experiments.careless_whisper.offline_compare tiny.en base [--limit N]

Prints each model's corpus WER (normalised text, the table's metric) and, for two models, the
difference with its standard error from a paired bootstrap over utterances (the same utterances
drawn for both models), so a difference is called only when it exceeds about two standard errors.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import jiwer

    from .baselines import offline
    from .decode import Vocabulary
    from .metrics import normalise, paired_difference
    from .speech import load_audio, load_prompts, split
    from .weights import PACKAGES, load_whisper

    parser = argparse.ArgumentParser(prog="python -m experiments.careless_whisper.offline_compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", choices=sorted(PACKAGES))
    parser.add_argument("--limit", type=int, help="only the first N test prompts")
    args = parser.parse_args(argv)
    _, test = split(load_prompts())
    test = [p for p in test[: args.limit] if normalise(p.text)]
    references = [normalise(p.text) for p in test]
    words = np.array([len(r.split()) for r in references])
    errors = {}
    for name in args.models:
        with tempfile.TemporaryDirectory() as cache:
            model, data_dir = load_whisper(name, cache_dir=cache)
            vocab = Vocabulary(data_dir)
            start = time.perf_counter()
            hypotheses = [normalise(offline(model, vocab, load_audio(p.path)).text) for p in test]
            seconds = time.perf_counter() - start
        errors[name] = np.array([jiwer.process_words(r, h).wer * n for r, h, n in zip(references, hypotheses, words)])
        print(f"{name}: offline WER {100 * errors[name].sum() / words.sum():.2f} % over {len(test)} test prompts ({words.sum()} words), {seconds:.0f} s",
              flush=True)
    if len(args.models) == 2:
        a, b = args.models
        diff, se = paired_difference(errors[a], errors[b], words)
        verdict = "resolved" if abs(diff) > 2 * se else "not resolved (within 2 s.e.)"
        print(f"{a} - {b}: {diff:+.2f} points, paired bootstrap s.e. {se:.2f}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
