"""The CarelessWhisper table: WER, emission lag and cost of each streaming method per chunk size,
on the held-out Asterisk prompts (real recorded speech; train and test split by prompt).

Rows: ``offline`` (whole utterance), ``causal_untuned`` (block mask, stock weights),
``local_agreement`` (re-encode the growing buffer, LocalAgreement-2), ``careless_whisper`` (block
mask + LoRA trained on weak chunk targets; one adapter per chunk size, checkpointed per epoch) and
``careless_whisper_beam`` (the same adapter, streaming beam search).

Figures: WER against chunk size; a timeline of committed words against the audio for one test
prompt; per-chunk encoder and decoder time over the 73 s prompt (the cost must not grow with it).
"""

from __future__ import annotations

import time

import matplotlib.ticker
import numpy as np
import torch

from shared.plots import pyplot
from shared.progress import progress
from shared.runs import Run
from shared.runtime import resolve_device

from .align import align_or_none
from .audio import SAMPLE_RATE
from .baselines import faster_whisper_la2, faster_whisper_model, faster_whisper_offline, local_agreement, offline
from .decode import Vocabulary, chunk_pieces, streaming_transcriber, transcribe_stream
from .encoder import Chunking
from .lora import add_lora, lora_parameters
from .metrics import emission_lags, loops, wer, word_emissions
from .speech import load_audio, load_prompts, split
from .train import fit_adapter, offline_encoder, prepare
from .weights import load_whisper


def evaluate(run_one, prompts, audio, aligned, vocab) -> dict:
    """Run ``run_one(audio) -> Transcript`` on every test prompt; WER, lags, real-time factor."""
    hyps, lags, compute, per_chunk = [], [], 0.0, []
    for p in progress(prompts, desc="test prompts"):
        start = time.perf_counter()
        t = run_one(audio[p.name])
        elapsed = time.perf_counter() - start
        compute += elapsed
        hyps.append(t.text)
        # offline has one "chunk": the whole utterance
        per_chunk += [e + d for e, d in zip(t.encoder_seconds, t.decoder_seconds)] or [elapsed]
        if aligned.get(p.name):
            lags += emission_lags(word_emissions(vocab.tokenizer, t.tokens, t.emitted_at, vocab.eot), aligned[p.name])
    seconds = sum(audio[p.name].size for p in prompts) / SAMPLE_RATE
    scores = wer([p.text for p in prompts], hyps)
    return {
        "loops": loops([p.text for p in prompts], hyps),
        "wer": 100 * scores["wer"], "substitutions": scores["substitutions"], "deletions": scores["deletions"], "insertions": scores["insertions"],
        "lag_s": float(np.mean(lags)) if lags else float("nan"), "lag_words": len(lags),
        "rtf": compute / seconds, "ms_per_chunk": 1e3 * float(np.mean(per_chunk)) if per_chunk else float("nan"),
        "hypotheses": hyps,
    }


def reproduce(cfg, run: Run) -> None:
    torch.manual_seed(int(cfg.train.seed))
    device = resolve_device(cfg.trainer.device)  # the paper preset says cuda; every model moves there
    model, data_dir = load_whisper(cfg.model)
    model = model.to(device)
    vocab = Vocabulary(data_dir)
    train_prompts, test_prompts = split(load_prompts(), cfg.data.test_fraction)
    if cfg.data.max_seconds is not None:
        import soundfile

        train_prompts, test_prompts = ([p for p in ps if soundfile.info(p.path).duration <= cfg.data.max_seconds] for ps in (train_prompts, test_prompts))
    train_prompts = train_prompts[: cfg.data.max_train]
    test_prompts = test_prompts[: cfg.data.max_test]
    audio = {p.name: load_audio(p.path) for p in test_prompts}
    aligned = {p.name: align_or_none(audio[p.name], p.text) for p in test_prompts}
    other, other_audio, other_aligned = other_speakers(run, cfg.data.max_other)
    results: dict[tuple[str, int | None], dict] = {}
    adapters: dict[int, object] = {}  # chunk ms -> fine-tuned model (shared by the greedy and beam rows)

    def finetuned(chunking: Chunking):
        if chunking.chunk_ms not in adapters:
            held_out = [p.text for p in test_prompts] + [r.text for r in other]  # synthetic text must not overlap them
            adapters[chunking.chunk_ms] = adapter_for(cfg, chunking, vocab, train_prompts, run, held_out)
        return adapters[chunking.chunk_ms]

    peers = []

    def peer():
        """faster-whisper on the same model.bin, loaded once (the same threads as our rows)."""
        if not peers:
            peers.append(faster_whisper_model(data_dir))
        return peers[0]

    for row in cfg.eval.rows:
        row_cfg = run.compose_row("streaming", row)
        kind, beam_size = row_cfg.method.kind, int(row_cfg.method.beam_size)
        sizes = [None] if kind in ("offline", "faster_whisper") else [int(c) for c in cfg.eval.chunks_ms]
        for chunk_ms in sizes:
            if kind in ("local_agreement", "faster_whisper_la2") and chunk_ms < cfg.eval.local_agreement_min_ms:
                continue
            if beam_size > 1 and chunk_ms not in cfg.eval.beam_chunks_ms:
                continue
            key = f"{row}_{chunk_ms}ms" if chunk_ms else row

            def transcriber(kind=kind, chunk_ms=chunk_ms, beam_size=beam_size, finetune=bool(row_cfg.method.finetune)):
                """The row's transcription of one utterance (a streaming row fine-tunes its adapter first)."""
                if kind == "offline":
                    return lambda a: offline(model, vocab, a)
                if kind == "faster_whisper":
                    return lambda a: faster_whisper_offline(peer(), vocab, a)
                if kind == "faster_whisper_la2":
                    return lambda a: faster_whisper_la2(peer(), vocab, a, chunk_ms)
                if kind == "local_agreement":
                    return lambda a: local_agreement(model, vocab, a, chunk_ms)
                chunking = Chunking(chunk_ms)
                streaming_model = finetuned(chunking) if finetune else model
                return lambda a: transcribe_stream(streaming_model, vocab, a, chunking, beam_size=beam_size, **decode_options(cfg))

            fresh = not run.checkpoint_path(f"result_{key}").is_file()  # else finished before an interruption
            result = run.cached(key, lambda t=transcriber: evaluate(t(), test_prompts, audio, aligned, vocab))
            if other:  # the same row on speakers it never heard
                result = {**result, **{f"{k}_other": v for k, v in run.cached(
                    f"{key}_other", lambda t=transcriber: evaluate(t(), other, other_audio, other_aligned, vocab)).items()}}
            if fresh:
                run.logger.log({k: v for k, v in result.items() if not k.startswith("hypotheses")}, scope=key)
            results[(row, chunk_ms)] = result
    main = int(cfg.eval.main_chunk_ms)
    for row in cfg.eval.rows:
        if run.has_row("streaming", row):
            continue
        mine = {c: r for (rw, c), r in results.items() if rw == row}
        if not mine:  # e.g. LocalAgreement-2 or beam with none of eval.chunks_ms in their lists
            run.logger.log({"row_skipped": row, "reason": "no chunk size of eval.chunks_ms runs this row"})
            continue
        head = mine.get(None) or mine.get(main) or next(iter(mine.values()))
        metrics = {k: head[k] for k in ("wer", "lag_s", "rtf", "ms_per_chunk", "loops", "wer_other", "lag_s_other", "rtf_other", "loops_other") if k in head}
        for c, r in mine.items():
            if c is not None:
                for k in ("wer", "lag_s", "rtf", "wer_other", "lag_s_other"):
                    if k in r:
                        metrics[f"{k}_{c}ms"] = r[k]
        run.add_results("streaming", row, metrics)
    run.save_figure(figure_wer(results, cfg), "wer_vs_chunk")
    write_hypotheses(run, results, test_prompts, other)
    if "careless_whisper" in cfg.eval.rows and main in [int(c) for c in cfg.eval.chunks_ms]:
        tuned = finetuned(Chunking(main))
        timeline(run, cfg, tuned, vocab, test_prompts, audio, aligned)
        cost_over_length(run, cfg, tuned, vocab)


def other_speakers(run: Run, limit: int | None = None):
    """The recordings of other speakers (``other_speakers.py``), their audio and alignments; none
    when they are not installed (logged: the table then has no ``*_other`` columns)."""
    from shared.errors import DataError

    from .other_speakers import load_recording_audio, load_recordings

    try:
        recordings = load_recordings()[:limit]
    except DataError as err:
        run.logger.log({"other_speakers_skipped": str(err)})
        return [], {}, {}
    audio = {r.name: load_recording_audio(r) for r in recordings}
    return recordings, audio, {r.name: align_or_none(audio[r.name], r.text) for r in recordings}


def decode_options(cfg) -> dict:
    return {"look_back": int(cfg.decode.look_back), "max_new": int(cfg.decode.max_new)}


def write_hypotheses(run: Run, results, prompts, other) -> None:
    """Every reference and hypothesis, per row and chunk size (hypotheses.json): errors can be read."""
    from shared.io import atomic_write_json

    table = {f"{row}_{c}ms" if c else row: r["hypotheses"] for (row, c), r in results.items()}
    table_other = {f"{row}_{c}ms" if c else row: r["hypotheses_other"] for (row, c), r in results.items() if "hypotheses_other" in r}
    atomic_write_json(run.dir / "hypotheses.json", {"prompts": [p.name for p in prompts], "references": [p.text for p in prompts], **table,
                                                    "other_speakers": {"names": [r.name for r in other], "references": [r.text for r in other], **table_other}})


def timeline(run: Run, cfg, model, vocab: Vocabulary, prompts, audio, aligned) -> None:
    """Committed words against the audio for one test prompt: when each word was emitted, beside
    the aligner's word ends (timeline.json, figure ``timeline``)."""
    from shared.io import atomic_write_json

    main = Chunking(int(cfg.eval.main_chunk_ms))
    name = cfg.eval.timeline_prompt
    if name is None:  # the longest aligned prompt under 15 s
        fitting = [p for p in prompts if aligned.get(p.name) and len(audio[p.name]) < 15 * SAMPLE_RATE]
        name = max(fitting, key=lambda p: len(audio[p.name])).name if fitting else prompts[0].name
    wave = audio[name]
    stream = streaming_transcriber(model, vocab, main, **decode_options(cfg))
    for piece in chunk_pieces(wave, main):
        stream.push(piece)
    result = stream.finish()
    words = word_emissions(vocab.tokenizer, result.tokens, result.emitted_at, vocab.eot)
    reference = [(w.text, w.start, w.end) for w in aligned.get(name) or []]
    atomic_write_json(run.dir / "timeline.json", {"prompt": name, "chunk_ms": main.chunk_ms, "seconds": len(wave) / SAMPLE_RATE,
                                                  "emitted": words, "aligned": reference})
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 3.6), sharex=True, gridspec_kw={"height_ratios": [1, 2]})
    t = np.arange(len(wave)) / SAMPLE_RATE
    top.plot(t, wave, lw=0.4, color="0.3")
    for _text, start, end in reference:
        top.axvspan(start, end, color="tab:blue", alpha=0.12)
    top.set(yticks=[], title=f"{name}: committed words ({main.chunk_ms} ms chunks) against the audio")
    for k, (text, at) in enumerate(words):
        bottom.plot([at], [1], "o", color="tab:red", ms=3)
        bottom.annotate(text, (at, 1), xytext=(0, 4 + 9 * (k % 3)), textcoords="offset points", fontsize=7, rotation=30, color="tab:red")
    for k, (text, _start, end) in enumerate(reference):
        bottom.plot([end], [0], "o", color="tab:blue", ms=3)
        bottom.annotate(text, (end, 0), xytext=(0, -12 - 9 * (k % 3)), textcoords="offset points", fontsize=7, rotation=30, color="tab:blue")
    for edge in np.arange(main.first_ms, len(wave) / SAMPLE_RATE + main.chunk_ms / 1e3, main.chunk_ms / 1e3):
        bottom.axvline(edge, color="0.85", lw=0.5, zorder=0)
    bottom.set(yticks=[0, 1], yticklabels=["aligned word end", "emitted"], ylim=(-1.2, 2.2), xlabel="audio time (s)")
    fig.tight_layout()
    run.save_figure(fig, "timeline")


def no_speech(model, vocab: Vocabulary, chunking: Chunking, cfg, seconds: float = 10.0) -> dict:
    """What the model writes on 10 s without speech: digital silence, and white noise at -50 and
    -30 dBFS (CarelessWhisper has no voice-activity detector; it must learn to emit end-of-text)."""
    rng = np.random.default_rng(0)
    n = int(seconds * SAMPLE_RATE)
    inputs = {"silence": np.zeros(n, np.float32)}
    for db in (-50, -30):
        inputs[f"noise {db} dBFS"] = (rng.standard_normal(n) * 10 ** (db / 20)).astype(np.float32)
    return {name: transcribe_stream(model, vocab, wave, chunking, **decode_options(cfg)).text.strip() for name, wave in inputs.items()}


def cost_over_length(run: Run, cfg, model, vocab: Vocabulary) -> None:
    """Per-chunk encoder and decoder time over one long prompt (73 s: two 30 s window resets):
    with the encoder cache, neither grows with the utterance (cost.json, figure ``cost_per_chunk``)."""
    from shared.io import atomic_write_json

    main = Chunking(int(cfg.eval.main_chunk_ms))
    found = [p for p in load_prompts() if p.name == cfg.eval.long_prompt]
    if not found:
        run.logger.log({"cost_prompt_missing": cfg.eval.long_prompt})
        return
    wave = load_audio(found[0].path)
    start = time.perf_counter()
    result = transcribe_stream(model, vocab, wave, main, **decode_options(cfg))
    seconds = time.perf_counter() - start
    enc, dec = 1e3 * np.array(result.encoder_seconds), 1e3 * np.array(result.decoder_seconds)
    quarter = max(1, len(enc) // 4)
    summary = {"prompt": found[0].name, "audio_s": len(wave) / SAMPLE_RATE, "chunks": len(enc), "rtf": seconds / (len(wave) / SAMPLE_RATE),
               "encoder_ms_first_quarter": float(enc[:quarter].mean()), "encoder_ms_last_quarter": float(enc[-quarter:].mean()),
               "decoder_ms_first_quarter": float(dec[:quarter].mean()), "decoder_ms_last_quarter": float(dec[-quarter:].mean()),
               "encoder_ms": enc.tolist(), "decoder_ms": dec.tolist(), "threads": torch.get_num_threads(), "text": result.text,
               "silence": no_speech(model, vocab, main, cfg)}
    atomic_write_json(run.dir / "cost.json", summary)
    run.logger.log({k: v for k, v in summary.items() if not isinstance(v, (list, str))}, scope="cost")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    at = main.first_ms / 1e3 + np.arange(len(enc)) * main.chunk_ms / 1e3
    ax.plot(at, enc, lw=0.8, label="encoder (new frames only)")
    ax.plot(at, dec, lw=0.8, label="decoder")
    ax.plot(at, np.array(result.encoder_seconds) * 0 + 1e3 * main.chunk_ms / 1e3, ls="--", color="0.5", lw=0.8, label="real time (chunk length)")
    ax.set(xlabel="audio time (s)", ylabel="ms per chunk", yscale="log", title=f"{found[0].name} ({len(wave) / SAMPLE_RATE:.0f} s), {main.chunk_ms} ms chunks")
    ax.legend(fontsize=7)
    fig.tight_layout()
    run.save_figure(fig, "cost_per_chunk")


def adapter_for(cfg, chunking: Chunking, vocab: Vocabulary, train_prompts, run: Run, held_out: list[str] = ()):
    """A fresh base model with LoRA trained at this chunk size (resumes per epoch); with
    ``train.synthetic``, on the real prompts plus that many sentences read by synthetic voices."""
    if cfg.train.get("synthetic"):
        from .synthetic import synthetic_prompts

        train_prompts = list(train_prompts) + synthetic_prompts(int(cfg.train.synthetic.count), run.dir / "synthetic", list(held_out),
                                                                seed=int(cfg.train.seed), voices=tuple(cfg.train.synthetic.voices))
    base, _ = load_whisper(cfg.model)
    model = add_lora(base.to(resolve_device(cfg.trainer.device)), int(cfg.lora.rank), init=cfg.lora.init, seed=int(cfg.train.seed),
                     targets=cfg.lora.targets)
    noise = None if cfg.train.noise is None else {"p": float(cfg.train.noise.p), "snr_db": [float(x) for x in cfg.train.noise.snr_db]}
    streams = None if cfg.train.streams is None else {k: cfg.train.streams[k] for k in ("count", "max_prompts", "max_seconds")} | {
        "gap_s": [float(x) for x in cfg.train.streams.gap_s]}
    utterances = prepare(train_prompts, vocab, chunking, speeds=[float(x) for x in cfg.train.speeds], noise=noise, seed=int(cfg.train.seed),
                         streams=streams, teacher=offline_encoder(model) if cfg.train.get("distill") else None)
    fraction = float(cfg.train.fraction.get(chunking.chunk_ms, 0.25))
    run.logger.log({"lora_parameters": lora_parameters(model), "train_utterances": len(utterances)}, scope=f"lora_{chunking.chunk_ms}ms")
    return fit_adapter(model, utterances, chunking, cfg.train, fraction, run.dir / "adapters" / f"{chunking.chunk_ms}ms",
                       log=lambda m: run.logger.log(m, scope=f"lora_{chunking.chunk_ms}ms"), meta={"model": cfg.model, "rank": int(cfg.lora.rank), "targets": cfg.lora.targets})


def figure_wer(results, cfg):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 3.2))
    for row in cfg.eval.rows:
        points = sorted((c, r["wer"]) for (rw, c), r in results.items() if rw == row and c is not None)
        if points:
            ax.plot([c for c, _ in points], [w for _, w in points], marker="o", label=row)
        elif (row, None) in results:
            ax.axhline(results[(row, None)]["wer"], ls="--", color="0.4", label=row)
    # symlog: the untuned causal model sits above 1000 %, the others near 5 %; WER is never negative
    ax.set(xscale="log", xlabel="chunk (ms)", ylabel="WER (%)", yscale="symlog", title="held-out Asterisk prompts")
    ax.set_ylim(bottom=0)
    chunks = sorted({c for (_, c) in results if c is not None})
    ax.set_xticks(chunks, [str(c) for c in chunks])  # the chunk sizes run, not the log axis' 3x10^2
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes: no point hidden
    fig.tight_layout()
    return fig
