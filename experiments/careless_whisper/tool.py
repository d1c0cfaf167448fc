"""Stream an audio file through the causal Whisper and print words as they are committed.

    python -m experiments.careless_whisper transcribe talk.wav [--chunk-ms 300] [--adapter DIR] [--beam 5] [--json]

The default is the trained adapter StreamLab ships for tiny.en at that chunk size
(``experiments/careless_whisper/adapters/``, with its provenance in ``careless_whisper.json``).
Where none ships (another chunk size, Whisper base), the tool refuses and says how to train one:
the causal model without its adapter loops ("front, front, front, ...") and is never run silently.

Any sample rate and channel count soundfile reads is converted to 16 kHz mono. Without ``--json``,
committed words are printed as they become final (older than the 2-token tentative tail), with the
audio time at which they were emitted; ``--json`` prints one object: ``text`` and ``words``
(``word``, ``start``, ``end``, ``emitted_at`` in seconds). ``start``/``end`` bound the audio in which
the stream recognised the word: from the start of the chunk whose arrival produced its first token
to the emission of its last (``end`` = ``emitted_at``, the chunk's end plus the convolutions'
12.5 ms look-ahead). Training makes a token appear only once its aligned end has been heard, so
the word's spoken end lies in, or shortly before, that interval (measured in the README); with
``--offline`` every word is emitted at the end and its interval is the whole file.
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
    p.add_argument("--adapter", help="a LoRA adapter folder saved by training (e.g. RUN/adapters/300ms/adapter); default: the shipped one")
    p.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    p.add_argument("--any-chunk", action="store_true", help="stream an adapter at a chunk size other than the one it was trained for")
    p.add_argument("--offline", action="store_true", help="ordinary offline Whisper over the whole file (the same output), to compare")
    p.add_argument("--json", action="store_true")
    p.add_argument("--trace", action="store_true",
                   help="greedy only: after every decoded chunk, print the hypothesis and the 4 likeliest next tokens with their log-probabilities to stderr")
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


SHIPPED = Path(__file__).parent / "adapters"


def shipped_adapter(model: str, chunk_ms: int) -> Path | None:
    path = SHIPPED / model / f"{chunk_ms}ms"
    return path if (path / "adapter_config.json").is_file() else None


def load_adapter(base, model: str, chunk_ms: int, adapter: str | None = None, any_chunk: bool = False):
    """``base`` with the streaming LoRA: ``adapter``, else the shipped one; none is a one-line refusal."""
    from peft import PeftModel

    if adapter is None:
        found = shipped_adapter(model, chunk_ms)
        if found is None:
            sizes = sorted(int(p.name[:-2]) for p in (SHIPPED / model).glob("*ms") if shipped_adapter(model, int(p.name[:-2]))) if (SHIPPED / model).is_dir() else []
            offer = f"trained adapters ship for {model} at {', '.join(f'{c} ms' for c in sizes)}; " if sizes else f"no trained adapter ships for {model}; "
            raise StreamlabError(f"no streaming adapter for {model} at {chunk_ms} ms ({offer}the untuned causal model only loops): train one with "
                                 f"`streamlab reproduce careless_whisper model={model} 'eval.chunks_ms=[{chunk_ms}]' 'eval.rows=[careless_whisper]'` "
                                 f"and pass --adapter RUN/adapters/{chunk_ms}ms/adapter")
        adapter = found
    check_adapter(Path(adapter), model, chunk_ms, any_chunk)
    return PeftModel.from_pretrained(base, str(adapter)).eval()


def transcribe(args) -> dict:
    import torch

    from .decode import Vocabulary, chunk_pieces, streaming_transcriber
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
    if args.trace and (args.beam > 1 or args.offline):
        raise StreamlabError("--trace follows the greedy stream: drop --beam and --offline")
    if args.adapter and args.offline:
        raise StreamlabError("--offline runs the stock model over the whole file: drop --adapter (a streaming adapter)")
    if not args.offline and args.adapter is None and shipped_adapter(args.model, chunking.chunk_ms) is None:
        load_adapter(None, args.model, chunking.chunk_ms)  # refuses before the audio and weights are read
    if args.adapter:
        check_adapter(Path(args.adapter), args.model, chunking.chunk_ms, args.any_chunk)
    audio = load_audio(args.audio)
    model, data_dir = load_whisper(args.model)
    if not args.offline:
        model = load_adapter(model, args.model, chunking.chunk_ms, args.adapter, args.any_chunk)
    vocab = Vocabulary(data_dir)
    printed = 0
    if args.offline:  # ordinary Whisper over the whole file, to compare with the stream (same output)
        from .baselines import offline

        with torch.inference_mode():
            result = offline(model, vocab, audio)
        return _output(args, vocab, result, audio, printed)
    stream = streaming_transcriber(model, vocab, chunking, beam_size=args.beam)
    with torch.inference_mode():
        for piece in chunk_pieces(audio, chunking):  # each chunk as soon as it can be decoded
            decoded = stream.step
            stream.push(piece)
            if args.trace and stream.step > decoded and stream.speech:
                _trace(stream, vocab)
            committed = stream.final_tokens + stream.tokens[: max(0, len(stream.tokens) - stream.look_back)]
            words = word_emissions(vocab.tokenizer, committed, stream.final_emitted + stream.emitted_at, vocab.eot)
            if not args.json:
                # the last word may still grow by a token: print only words followed by another
                for w, t in words[printed : max(printed, len(words) - 1)]:
                    print(f"[{t:6.2f}s] {w}", flush=True)
                printed = max(printed, len(words) - 1)
    return _output(args, vocab, stream.finish(), audio, printed)


def _trace(stream, vocab) -> None:
    nxt = ", ".join(f"{'<eot>' if t == vocab.eot else repr(vocab.decode([t]))} {lp:.2f}" for t, lp in stream.next_candidates())
    print(f"[{stream.mel.seconds:6.2f}s] ...{vocab.decode(stream.tokens)[-40:]!r} | next: {nxt}", file=sys.stderr, flush=True)


def _output(args, vocab, result, audio, printed: int) -> dict:
    """Print the words not printed yet; the JSON object of ``--json``."""
    import numpy as np

    from .audio import SAMPLE_RATE
    from .metrics import word_intervals

    words = word_intervals(vocab.tokenizer, result.tokens, result.emitted_at, result.heard_from, vocab.eot)
    if not args.json:
        for w, _, t in words[printed:]:
            print(f"[{t:6.2f}s] {w}", flush=True)
    out = [{"word": w, "start": round(start, 3), "end": round(t, 3), "emitted_at": round(t, 3)} for w, start, t in words]
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
