"""Does the streaming model generalise? Every row on two test sets, in one process, paired by file:

    python -m experiments.careless_whisper.generalise [--adapter DIR] [--chunk-ms 300] [--la-chunk-ms 1000] [--out FILE.json]

- ``asterisk``: the 109 held-out Asterisk prompts (the training speaker, telephone band);
- ``other_speakers``: 13 real recordings of five other speakers (``other_speakers.py``): LibriVox,
  a card game, a robot command, JFK, a 53 s sonnet;
- ``validation`` (``--validation``): 60 fortune sentences held back from training
  (``synthetic.validation_prompts``) read by the five synthetic voices: for choosing recipes and
  settings without looking at a test set; synthetic speech is never a claim.

Rows: ``offline`` (our Whisper, whole file), ``careless_whisper`` (the adapter streaming at
``--chunk-ms``; default: the adapter StreamLab ships), ``faster_whisper`` (offline, CTranslate2) and
``faster_whisper_la2`` (Whisper-Streaming's LocalAgreement-2 over faster-whisper at
``--la-chunk-ms``). Per row and set: WER (Whisper's normaliser), the paired difference to
``offline`` with its bootstrap s.e. over files, mean emission lag against pocketsphinx's forced
alignment (files it cannot align are left out of the lag only), real-time factor (compute / audio,
``torch.get_num_threads()`` threads for every row) and loops (files where a word repeats more than 3
times in a row and the reference has no such run); for our streaming rows also the share of words
whose interval (``transcribe --json``'s ``start``/``end``) holds the aligned word end. Then each
set back to back as one long stream (Asterisk: 109 prompts, about 5 minutes): WER, the longest
run of one word, and the resident memory every 10 s. Prints a table (with substitutions /
deletions / insertions: a stream that stops emitting shows as deletions); ``--out`` writes every
hypothesis too, and ``python -m experiments.careless_whisper paired A.json B.json`` compares two
such files file by file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from shared.errors import StreamlabError

ROWS = ("offline", "careless_whisper", "faster_whisper", "faster_whisper_la2")


def telephone_band(audio: np.ndarray) -> np.ndarray:
    """16 kHz audio through an 8 kHz channel (anti-aliased down and back up): nothing above 4 kHz
    is left, as in the Asterisk prompts the adapters are trained on."""
    from scipy.signal import resample_poly

    return resample_poly(resample_poly(audio, 1, 2), 2, 1)[: len(audio)].astype(np.float32)


def test_sets(limit: int | None = None, telephone: bool = False, validation: bool = False) -> dict[str, list[tuple[str, str, np.ndarray]]]:
    """set -> [(name, reference, 16 kHz audio)]; ``telephone``: the other speakers band-limited
    to the training prompts' band (``telephone_band``); ``validation``: also the synthetic
    validation set (``synthetic.validation_prompts``), for choosing settings without a test set."""
    from .other_speakers import load_recording_audio, load_recordings
    from .speech import load_audio, load_prompts, split

    _, test = split(load_prompts())
    channel = telephone_band if telephone else (lambda a: a)
    sets = {"asterisk": [(p.name, p.text, load_audio(p.path)) for p in test[:limit]],
            "other_speakers": [(r.name, r.text, channel(load_recording_audio(r))) for r in load_recordings()[:limit]]}
    if validation:
        from shared.paths import outputs_root

        from .synthetic import validation_prompts

        held_out = [ref for files in sets.values() for _, ref, _ in files]
        prompts = validation_prompts(outputs_root() / "cache" / "synthetic_validation", held_out)
        sets["validation"] = [(p.name, p.text, load_audio(p.path)) for p in prompts[:limit]]
    return sets


def score(files, transcripts, vocab, aligned, offline_errors=None) -> dict:
    import jiwer

    from .audio import SAMPLE_RATE
    from .metrics import emission_lags, interval_hits, loops, normalise, paired_difference, word_emissions, word_intervals

    refs = [normalise(ref) for _, ref, _ in files]
    hyps = [normalise(t.text) for t, _ in transcripts]
    words = np.array([len(r.split()) for r in refs])
    # an empty reference (jiwer refuses it): every hypothesis word is an insertion
    measures = [jiwer.process_words(r, h) if n else SimpleNamespace(substitutions=0, deletions=0, insertions=len(h.split()))
                for r, h, n in zip(refs, hyps, words)]
    errors = np.array([m.substitutions + m.deletions + m.insertions for m in measures])
    lags, hits = [], []
    for (name, _, _), (t, _) in zip(files, transcripts):
        if aligned.get(name):
            lags += emission_lags(word_emissions(vocab.tokenizer, t.tokens, t.emitted_at, vocab.eot), aligned[name])
            if t.heard_from:  # a streaming row of ours: does the word's interval hold its aligned end?
                hits += interval_hits(word_intervals(vocab.tokenizer, t.tokens, t.emitted_at, t.heard_from, vocab.eot), aligned[name])
    out = {"wer": 100 * errors.sum() / words.sum(), "words": int(words.sum()), "files": len(files),
           "lag_s": float(np.mean(lags)) if lags else None, "lag_words": len(lags),
           "interval_hit": float(np.mean(hits)) if hits else None,
           "rtf": sum(s for _, s in transcripts) / (sum(len(a) for *_, a in files) / SAMPLE_RATE),
           "loops": loops([r for _, r, _ in files], [t.text for t, _ in transcripts]),
           "hypotheses": [t.text for t, _ in transcripts], "errors": errors.tolist(),
           # which errors: a stream that stops emitting (end-of-text winning chunk after chunk) shows as deletions
           **{kind: int(sum(getattr(m, kind) for m in measures)) for kind in ("substitutions", "deletions", "insertions")}}
    if offline_errors is not None:
        out["minus_offline"], out["minus_offline_se"] = paired_difference(errors, offline_errors, words)
    return out


def long_form(model, vocab, chunking, files, gap_s: float = 0.5) -> dict:
    """Every file of a set back to back (``gap_s`` of silence between): one long stream through the
    tool's path, with the process's resident memory sampled every 10 s of audio (it must stay flat:
    the 30 s windows reset every cache)."""
    import psutil
    import torch

    from .audio import SAMPLE_RATE
    from .decode import chunk_pieces, streaming_transcriber
    from .metrics import longest_run, wer

    gap = np.zeros(int(gap_s * SAMPLE_RATE), np.float32)
    audio = np.concatenate([part for *_, a in files for part in (a, gap)])
    reference = " ".join(ref for _, ref, _ in files)
    stream = streaming_transcriber(model, vocab, chunking)
    rss, heard, start = [], 0, time.perf_counter()
    with torch.inference_mode():
        for piece in chunk_pieces(audio, chunking):
            stream.push(piece)
            heard += len(piece)
            if heard // (10 * SAMPLE_RATE) > len(rss) - 1:
                rss.append(psutil.Process().memory_info().rss / 2**20)
        result = stream.finish()
    seconds = len(audio) / SAMPLE_RATE
    return {"audio_s": seconds, "wer": 100 * wer([reference], [result.text])["wer"], "longest_run": longest_run(result.text),
            "reference_longest_run": longest_run(reference), "rtf": (time.perf_counter() - start) / seconds,
            "rss_mb_every_10s": [round(r, 1) for r in rss], "text": result.text}


def main(argv: list[str] | None = None) -> int:
    import torch

    from .align import align_or_none
    from .baselines import faster_whisper_la2, faster_whisper_model, faster_whisper_offline, offline
    from .decode import Vocabulary, transcribe_stream
    from .encoder import Chunking
    from .tool import load_adapter
    from .weights import load_whisper

    parser = argparse.ArgumentParser(prog="python -m experiments.careless_whisper.generalise", description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", help="a LoRA adapter folder (default: the shipped one for --chunk-ms)")
    parser.add_argument("--chunk-ms", type=int, default=300)
    parser.add_argument("--la-chunk-ms", type=int, default=1000, help="chunk of LocalAgreement-2 over faster-whisper")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--limit", type=int, help="only the first N files of each set")
    parser.add_argument("--cut-at-chunk-ends", action="store_true",
                        help="push the audio in pieces ending at chunk ends (as before the look-ahead fix: each chunk decoded a chunk late), to measure the lag it cost")
    parser.add_argument("--no-long-form", action="store_true", help="skip the long-form streams")
    parser.add_argument("--telephone", action="store_true",
                        help="band-limit the other speakers to 4 kHz, the training prompts' band (does the wideband channel explain their errors?)")
    parser.add_argument("--validation", action="store_true",
                        help="also score the synthetic validation set (held-back fortune sentences, five synthetic voices): for choosing settings, never a claim")
    parser.add_argument("--eot-penalty", type=float, default=0.0,
                        help="subtract this from end-of-text's logit in the greedy stream (default 0: the paper's decoder)")
    parser.add_argument("--out", type=Path, help="write the scores and hypotheses as JSON")
    args = parser.parse_args(argv)
    rows = args.rows.split(",")
    try:
        if unknown := set(rows) - set(ROWS):
            raise StreamlabError(f"unknown rows {sorted(unknown)}; valid: {', '.join(ROWS)}")
        chunking = Chunking(args.chunk_ms)
        base, data_dir = load_whisper("tiny.en")
        vocab = Vocabulary(data_dir)
        streaming = load_adapter(base, "tiny.en", chunking.chunk_ms, args.adapter) if "careless_whisper" in rows else None
        stock, _ = load_whisper("tiny.en")
        sets = test_sets(args.limit, args.telephone, args.validation)
    except (StreamlabError, ValueError) as err:
        print(f"generalise: error: {err}", file=sys.stderr)
        return 2
    fw = faster_whisper_model(data_dir) if any(r.startswith("faster") for r in rows) else None
    run = {"offline": lambda a: offline(stock, vocab, a),
           "careless_whisper": lambda a: transcribe_stream(streaming, vocab, a, chunking, piece_ms=chunking.chunk_ms if args.cut_at_chunk_ends else None,
                                                                eot_penalty=args.eot_penalty),
           "faster_whisper": lambda a: faster_whisper_offline(fw, vocab, a),
           "faster_whisper_la2": lambda a: faster_whisper_la2(fw, vocab, a, args.la_chunk_ms)}
    results = {"threads": torch.get_num_threads(), "chunk_ms": chunking.chunk_ms, "la_chunk_ms": args.la_chunk_ms, "adapter": str(args.adapter or "shipped"),
               "telephone": args.telephone, "eot_penalty": args.eot_penalty}
    for set_name, files in sets.items():
        aligned = {name: align_or_none(audio, ref) for name, ref, audio in files}
        results[set_name] = {"references": [r for _, r, _ in files], "names": [n for n, *_ in files]}
        offline_errors = None
        for row in rows:
            transcripts = []
            with torch.inference_mode():
                for _, _, audio in files:
                    start = time.perf_counter()
                    t = run[row](audio)
                    transcripts.append((t, time.perf_counter() - start))
            r = score(files, transcripts, vocab, aligned, offline_errors if row != "offline" else None)
            if row == "offline":
                offline_errors = np.array(r["errors"])
            results[set_name][row] = r
            diff = f"{r['minus_offline']:+6.2f} ± {r['minus_offline_se']:.2f}" if "minus_offline" in r else "      -      "
            lag = f"{r['lag_s']:.2f}" if r["lag_s"] is not None else "-"
            hit = f"  word interval holds the aligned end: {100 * r['interval_hit']:.0f} %" if r["interval_hit"] is not None else ""
            print(f"{set_name:15s} {row:19s} WER {r['wer']:6.2f} %  vs offline {diff}  lag {lag:>5s} s ({r['lag_words']} words)  "
                  f"RTF {r['rtf']:.3f}  loops {r['loops']}  S/D/I {r['substitutions']}/{r['deletions']}/{r['insertions']}{hit}", flush=True)
    if streaming is not None and not args.limit and not args.no_long_form:
        for set_name in ("asterisk", "other_speakers"):
            r = results[set_name]["long_form"] = long_form(streaming, vocab, chunking, sets[set_name])
            print(f"{set_name:15s} long form: {r['audio_s']:.0f} s in one stream, WER {r['wer']:.2f} %, a word repeated at most "
                  f"{r['longest_run']}x in a row (reference {r['reference_longest_run']}x), RTF {r['rtf']:.3f}, "
                  f"resident memory {r['rss_mb_every_10s'][min(1, len(r['rss_mb_every_10s']) - 1)]:.0f} MB at 10 s -> {r['rss_mb_every_10s'][-1]:.0f} MB at the end", flush=True)
    if args.out:
        from shared.io import atomic_write_json

        atomic_write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
