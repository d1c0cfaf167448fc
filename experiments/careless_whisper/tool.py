"""Stream an audio file through the causal Whisper and print words as they are committed.

    python -m experiments.careless_whisper transcribe talk.wav --model tiny.en --chunk-ms 300 [--adapter DIR] [--beam 5] [--json]

Any sample rate and channel count soundfile reads is converted to 16 kHz mono. Without ``--json``,
committed words are printed as they become final (older than the 2-token tentative tail), with the
audio time at which they were emitted; ``--json`` prints one object: ``text`` and ``words``
(``word``, ``start``, ``end``, ``emitted_at`` in seconds; ``start``/``end`` bound the audio in which
the word was recognised: from the previous word's emission to its own).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.errors import StreamlabError

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(USAGE_ERROR, f"careless_whisper: error: {message} (see '{self.prog} --help')\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m experiments.careless_whisper transcribe", description="streaming transcription of an audio file")
    p.add_argument("audio")
    p.add_argument("--model", default="tiny.en", choices=("tiny.en", "base"))
    p.add_argument("--chunk-ms", type=int, default=300)
    p.add_argument("--adapter", help="a LoRA adapter folder saved by training (e.g. RUN/adapters/300ms/adapter)")
    p.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    p.add_argument("--any-chunk", action="store_true", help="stream an adapter at a chunk size other than the one it was trained for")
    p.add_argument("--offline", action="store_true", help="ordinary offline Whisper over the whole file (the same output), to compare")
    p.add_argument("--json", action="store_true")
    return p


def check_adapter(path: Path, model: str, chunk_ms: int, any_chunk: bool = False) -> None:
    """An adapter folder written by training, for this model (another model's LoRA has other shapes)
    and this chunk size (an adapter streams well at the size it was trained for; ``any_chunk`` runs
    it at another one anyway, with a warning)."""
    if not (path / "adapter_config.json").is_file():
        raise StreamlabError(f"no LoRA adapter at {path}: expected adapter_config.json there (training writes RUN/adapters/<ms>ms/adapter)")
    meta_path = path / "careless_whisper.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("model") != model:
            raise StreamlabError(f"adapter {path} was trained for Whisper {meta.get('model')}, not {model}: pass --model {meta.get('model')}")
        if meta.get("chunk_ms") != chunk_ms:
            if not any_chunk:
                raise StreamlabError(f"adapter {path} was trained for {meta.get('chunk_ms')} ms chunks, not {chunk_ms}: "
                                     f"pass --chunk-ms {meta.get('chunk_ms')} (or --any-chunk to stream it at {chunk_ms} ms anyway)")
            print(f"careless_whisper: warning: adapter {path} was trained for {meta.get('chunk_ms')} ms chunks, streaming {chunk_ms} ms", file=sys.stderr)


def transcribe(args) -> dict:
    import torch

    from .audio import SAMPLE_RATE
    from .decode import Vocabulary, streaming_transcriber
    from .encoder import Chunking
    from .metrics import word_emissions
    from .speech import load_audio
    from .weights import load_whisper

    try:
        chunking = Chunking(args.chunk_ms)
    except ValueError as err:
        raise StreamlabError(str(err)) from err
    if args.beam < 1:
        raise StreamlabError(f"--beam must be at least 1 (got {args.beam})")
    if args.adapter and args.offline:
        raise StreamlabError("--offline runs the stock model over the whole file: drop --adapter (a streaming adapter)")
    if args.adapter:
        check_adapter(Path(args.adapter), args.model, chunking.chunk_ms, args.any_chunk)
    audio = load_audio(args.audio)
    model, data_dir = load_whisper(args.model)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).eval()
    vocab = Vocabulary(data_dir)
    printed = 0
    if args.offline:  # ordinary Whisper over the whole file, to compare with the stream (same output)
        from .baselines import offline

        with torch.inference_mode():
            result = offline(model, vocab, audio)
        return _output(args, vocab, result, audio, printed)
    stream = streaming_transcriber(model, vocab, chunking, beam_size=args.beam)
    piece = SAMPLE_RATE * chunking.chunk_ms // 1000
    with torch.inference_mode():
        for i in range(0, len(audio), piece):
            stream.push(audio[i : i + piece])
            committed = stream.final_tokens + stream.tokens[: max(0, len(stream.tokens) - stream.look_back)]
            words = word_emissions(vocab.tokenizer, committed, stream.final_emitted + stream.emitted_at, vocab.eot)
            if not args.json:
                # the last word may still grow by a token: print only words followed by another
                for w, t in words[printed : max(printed, len(words) - 1)]:
                    print(f"[{t:6.2f}s] {w}", flush=True)
                printed = max(printed, len(words) - 1)
    return _output(args, vocab, stream.finish(), audio, printed)


def _output(args, vocab, result, audio, printed: int) -> dict:
    """Print the words not printed yet; the JSON object of ``--json``."""
    import numpy as np

    from .audio import SAMPLE_RATE
    from .metrics import word_emissions

    words = word_emissions(vocab.tokenizer, result.tokens, result.emitted_at, vocab.eot)
    if not args.json:
        for w, t in words[printed:]:
            print(f"[{t:6.2f}s] {w}", flush=True)
    out, previous = [], 0.0
    for w, t in words:
        out.append({"word": w, "start": round(previous, 3), "end": round(t, 3), "emitted_at": round(t, 3)})
        previous = t
    return {"text": result.text.strip(), "words": out, "audio_seconds": round(len(audio) / SAMPLE_RATE, 3), "silence_only": bool(np.abs(audio).max() < 1e-4)}


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        result = transcribe(args)
    except StreamlabError as err:
        print(f"careless_whisper: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    if args.json:
        print(json.dumps(result))
    else:
        print(result["text"])
    return 0
