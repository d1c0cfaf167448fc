"""The CarelessWhisper table: WER, emission lag and cost of each streaming method per chunk size,
on the held-out Asterisk prompts (real recorded speech; train and test split by prompt).

Rows: ``offline`` (whole utterance), ``causal_untuned`` (block mask, stock weights),
``local_agreement`` (re-encode the growing buffer, LocalAgreement-2), ``careless_whisper`` (block
mask + LoRA trained on weak chunk targets; one adapter per chunk size, checkpointed per epoch).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from shared.plots import pyplot
from shared.progress import progress
from shared.runs import Run

from .align import AlignmentError, align
from .audio import SAMPLE_RATE
from .baselines import local_agreement, offline
from .decode import Vocabulary, transcribe_stream
from .encoder import Chunking
from .lora import add_lora, lora_parameters
from .metrics import emission_lags, wer, word_emissions
from .speech import load_audio, load_prompts, split
from .train import fit_adapter, prepare
from .weights import load_whisper


def evaluate(run_one, prompts, audio, aligned, vocab) -> dict:
    """Run ``run_one(audio) -> Transcript`` on every test prompt; WER, lags, real-time factor."""
    hyps, lags, compute, per_chunk = [], [], 0.0, []
    for p in progress(prompts, desc="test prompts"):
        start = time.perf_counter()
        t = run_one(audio[p.name])
        compute += time.perf_counter() - start
        hyps.append(t.text)
        per_chunk += [e + d for e, d in zip(t.encoder_seconds, t.decoder_seconds)]
        if aligned.get(p.name):
            lags += emission_lags(word_emissions(vocab.tokenizer, t.tokens, t.emitted_at, vocab.eot), aligned[p.name])
    seconds = sum(len(a) for a in audio.values()) / SAMPLE_RATE
    scores = wer([p.text for p in prompts], hyps)
    return {
        "wer": 100 * scores["wer"], "substitutions": scores["substitutions"], "deletions": scores["deletions"], "insertions": scores["insertions"],
        "lag_s": float(np.mean(lags)) if lags else float("nan"), "lag_words": len(lags),
        "rtf": compute / seconds, "ms_per_chunk": 1e3 * float(np.mean(per_chunk)) if per_chunk else float("nan"),
        "hypotheses": hyps,
    }


def reproduce(cfg, run: Run) -> None:
    torch.manual_seed(int(cfg.train.seed))
    model, data_dir = load_whisper(cfg.model)
    vocab = Vocabulary(data_dir)
    train_prompts, test_prompts = split(load_prompts(), cfg.data.test_fraction)
    train_prompts = train_prompts[: cfg.data.max_train]
    test_prompts = test_prompts[: cfg.data.max_test]
    audio = {p.name: load_audio(p.path) for p in test_prompts}
    aligned = {}
    for p in test_prompts:
        try:
            aligned[p.name] = align(audio[p.name], p.text)
        except AlignmentError:
            aligned[p.name] = None  # no reference times: counted in WER, not in the lag
    results: dict[tuple[str, int | None], dict] = {}
    for row in cfg.eval.rows:
        row_cfg = run.compose_row("streaming", row)
        kind = row_cfg.method.kind
        sizes = [None] if kind == "offline" else [int(c) for c in cfg.eval.chunks_ms]
        for chunk_ms in sizes:
            if kind == "local_agreement" and chunk_ms < cfg.eval.local_agreement_min_ms:
                continue
            key = f"{row}_{chunk_ms}ms" if chunk_ms else row
            done = run.checkpoint_path(f"result_{key}")
            if done.is_file():
                results[(row, chunk_ms)] = torch.load(done, weights_only=False)
                continue
            if kind == "offline":
                run_one = lambda a: offline(model, vocab, a)  # noqa: E731
            elif kind == "local_agreement":
                run_one = lambda a, c=chunk_ms: local_agreement(model, vocab, a, c)  # noqa: E731
            else:
                chunking = Chunking(chunk_ms)
                streaming_model = model
                if row_cfg.method.finetune:
                    streaming_model = adapter_for(cfg, chunking, vocab, train_prompts, run)
                run_one = lambda a, m=streaming_model, c=chunking: transcribe_stream(m, vocab, a, c)  # noqa: E731
            result = evaluate(run_one, test_prompts, audio, aligned, vocab)
            run.save_checkpoint(f"result_{key}", result)
            run.logger.log({k: v for k, v in result.items() if k != "hypotheses"}, scope=key)
            results[(row, chunk_ms)] = result
    main = int(cfg.eval.main_chunk_ms)
    for row in cfg.eval.rows:
        if run.has_row("streaming", row):
            continue
        mine = {c: r for (rw, c), r in results.items() if rw == row}
        head = mine.get(None) or mine.get(main) or next(iter(mine.values()))
        metrics = {k: head[k] for k in ("wer", "lag_s", "rtf", "ms_per_chunk")}
        for c, r in mine.items():
            if c is not None:
                metrics[f"wer_{c}ms"] = r["wer"]
                metrics[f"lag_s_{c}ms"] = r["lag_s"]
                metrics[f"rtf_{c}ms"] = r["rtf"]
        run.add_results("streaming", row, metrics)
    run.save_figure(figure_wer(results, cfg), "wer_vs_chunk")


def adapter_for(cfg, chunking: Chunking, vocab: Vocabulary, train_prompts, run: Run):
    """A fresh base model with LoRA trained at this chunk size (resumes per epoch)."""
    base, _ = load_whisper(cfg.model)
    model = add_lora(base, int(cfg.lora.rank), init=cfg.lora.init, seed=int(cfg.train.seed))
    utterances = prepare(train_prompts, vocab, chunking)
    fraction = float(cfg.train.fraction.get(chunking.chunk_ms, 0.25))
    run.logger.log({"lora_parameters": lora_parameters(model), "train_utterances": len(utterances)}, scope=f"lora_{chunking.chunk_ms}ms")
    return fit_adapter(model, utterances, chunking, cfg.train, fraction, run.dir / "adapters" / f"{chunking.chunk_ms}ms",
                       log=lambda m: run.logger.log(m, scope=f"lora_{chunking.chunk_ms}ms"))


def figure_wer(results, cfg):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for row in cfg.eval.rows:
        points = sorted((c, r["wer"]) for (rw, c), r in results.items() if rw == row and c is not None)
        if points:
            ax.plot([c for c, _ in points], [w for _, w in points], marker="o", label=row)
        elif (row, None) in results:
            ax.axhline(results[(row, None)]["wer"], ls="--", color="0.4", label=row)
    ax.set(xscale="log", xlabel="chunk (ms)", ylabel="WER (%)", yscale="symlog", title="held-out Asterisk prompts")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
