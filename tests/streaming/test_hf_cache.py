"""``StreamingCache``: a transformers Cache that ``model.generate`` streams through, checked against
the project's own streaming loop and against a float64 StreamingLLM written here from scratch."""

import math

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from shared.streaming import DeepSink, Ring, SinkWindowPolicy
from shared.streaming.hf import ATTN_IMPLEMENTATION, PaddedBatchError, SinkCache, StreamingCache, StreamingModel, attn_implementation, rope_of

PROMPT, NEW, SINKS, WINDOW = 11, 30, 4, 12  # the cache keeps 16 entries: eviction starts at token 17


def tiny(seed=0, rope_parameters=None, max_position_embeddings=4096):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=max_position_embeddings, tie_word_embeddings=False,
                         rope_parameters=rope_parameters or {"rope_type": "default", "rope_theta": 10000.0})
    return LlamaForCausalLM(config).eval()


def prompt(batch=1, length=PROMPT, seed=0):
    return torch.randint(1, 96, (batch, length), generator=torch.Generator().manual_seed(seed))  # 0 is the pad id


def greedy(model, ids, cache, new=NEW):
    out = model.generate(ids, past_key_values=cache, max_new_tokens=new, min_new_tokens=new, do_sample=False, output_logits=True, return_dict_in_generate=True,
                         pad_token_id=0)
    return out.sequences, torch.stack(out.logits, 1)


def project_loop(model, sequence, policy, prompt_length, chunk=None):
    """Logits of the project's StreamingModel at the positions generate() scored."""
    stream = StreamingModel(model, policy, max_chunk=chunk or prompt_length, batch=sequence.shape[0])
    logits = [stream.step(sequence[:, :prompt_length])[:, -1]]
    for t in range(prompt_length, sequence.shape[1] - 1):
        logits.append(stream.step(sequence[:, t : t + 1])[:, -1])
    return torch.stack(logits, 1)


def float64_streaming_llm(model, tokens, sinks, window):
    """StreamingLLM from scratch in float64, one token at a time: every layer keeps pre-RoPE keys of
    the first ``sinks`` tokens and the ``window`` most recent; keys take positions 0..n-1 inside the
    cache and the query position n (the paper's §3.2). Returns the logits after each token."""
    m = model.model
    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    d = cfg.hidden_size // heads
    inv_freq = 1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))

    def rotate(x, pos):  # x [n, d], rotate-half convention
        angle = torch.cat([pos[:, None].double() * inv_freq] * 2, -1)
        return x * angle.cos() + torch.cat([-x[:, d // 2 :], x[:, : d // 2]], -1) * angle.sin()

    def rms(x, norm):
        return norm.weight.double() * x / torch.sqrt((x * x).mean(-1, keepdim=True) + norm.variance_epsilon)

    def w(linear):
        return linear.weight.double()

    caches = [[] for _ in m.layers]  # per layer: list of (pre-RoPE k [kv_heads, d], v [kv_heads, d])
    out = []
    for token in tokens.tolist():
        h = m.embed_tokens.weight.double()[token]
        for layer, cache in zip(m.layers, caches):
            x = rms(h, layer.input_layernorm)
            a = layer.self_attn
            q, k, v = (w(a.q_proj) @ x).view(heads, d), (w(a.k_proj) @ x).view(kv_heads, d), (w(a.v_proj) @ x).view(kv_heads, d)
            if len(cache) > sinks + window:
                raise AssertionError("evicted too late")
            cache.append((k, v))
            keys = torch.stack([c[0] for c in cache])  # [n + 1, kv_heads, d]
            values = torch.stack([c[1] for c in cache])
            n = len(cache) - 1
            heads_out = []
            for head in range(heads):
                g = head // (heads // kv_heads)
                kr = rotate(keys[:, g], torch.arange(n + 1))
                qr = rotate(q[head][None], torch.tensor([n]))[0]
                p = torch.softmax(kr @ qr / math.sqrt(d), 0)
                heads_out.append(p @ values[:, g])
            h = h + w(a.o_proj) @ torch.cat(heads_out)
            x = rms(h, layer.post_attention_layernorm)
            mlp = layer.mlp
            h = h + w(mlp.down_proj) @ (torch.nn.functional.silu(w(mlp.gate_proj) @ x) * (w(mlp.up_proj) @ x))
            if len(cache) > sinks + window:  # evict after the step: the next token sees sinks + window
                del cache[sinks]
        out.append(w(model.lm_head) @ rms(h, m.norm))
    return torch.stack(out)


def test_greedy_generate_through_the_sink_cache_equals_the_project_loop_and_a_float64_streaming_llm():
    model, ids = tiny(), prompt()
    sequence, logits = greedy(model, ids, SinkCache(model, sinks=SINKS, window=WINDOW))
    assert sequence.shape[1] == PROMPT + NEW
    ours = project_loop(model, sequence, SinkWindowPolicy(SINKS, SINKS + WINDOW), PROMPT)
    assert (logits - ours).abs().max() < 1e-4 and torch.equal(logits.argmax(-1), ours.argmax(-1))
    reference = float64_streaming_llm(model, sequence[0, :-1], SINKS, WINDOW)[PROMPT - 1 :]
    assert (logits[0].double() - reference).abs().max() < 1e-4
    assert torch.equal(sequence[0, PROMPT:], reference.argmax(-1))


def test_the_evicting_cache_differs_from_a_dense_cache_only_after_the_first_eviction():
    model, ids = tiny(), prompt()
    sequence, streamed = greedy(model, ids, SinkCache(model, sinks=SINKS, window=WINDOW))
    dense = model(sequence[:, :-1], past_key_values=DynamicCache(config=model.config)).logits[:, PROMPT - 1 :]
    first_evicting_step = SINKS + WINDOW + 1 - PROMPT  # the step whose token is the 18th: one key gone
    assert (streamed[:, :first_evicting_step] - dense[:, :first_evicting_step]).abs().max() < 1e-4
    assert (streamed[:, first_evicting_step:] - dense[:, first_evicting_step:]).abs().max() > 1e-2


def test_a_prompt_longer_than_the_cache_needs_the_streaming_attention_and_is_then_exact():
    model, ids = tiny(), prompt(length=40)
    with pytest.raises(ValueError, match="hide cached keys.*attn_implementation='streamlab_streaming'"):
        greedy(model, ids, SinkCache(model, sinks=SINKS, window=WINDOW), new=2)
    with attn_implementation(model, ATTN_IMPLEMENTATION):
        sequence, logits = greedy(model, ids, SinkCache(model, sinks=SINKS, window=WINDOW), new=12)
    token_by_token = project_loop(model, sequence, SinkWindowPolicy(SINKS, SINKS + WINDOW), 1, chunk=1)[:, 39:]
    assert (logits - token_by_token).abs().max() < 1e-4


@pytest.mark.parametrize("policy", [Ring(SINKS, SINKS + WINDOW), Ring(SINKS, SINKS + WINDOW, reposition="cache"),
                                    SinkWindowPolicy(0, WINDOW), DeepSink(tokens_per_frame=1, sink_frames=3, window_frames=8)], ids=repr)
def test_other_policies_generate_as_the_project_loop_does(policy):
    model, ids = tiny(seed=2), prompt(seed=2, length=8)
    sequence, logits = greedy(model, ids, StreamingCache(model, policy), new=40)  # the ring (window + 1024 slots) holds keys the query must not see
    ours = project_loop(model, sequence, policy, 8)
    assert (logits - ours).abs().max() < 1e-4


def test_equal_length_rows_stream_as_a_batch_and_padded_rows_are_refused():
    model, ids = tiny(), prompt(batch=2)
    batched, _ = greedy(model, ids, SinkCache(model, sinks=SINKS, window=WINDOW), new=24)
    for row in range(2):
        alone, _ = greedy(model, ids[row : row + 1], SinkCache(model, sinks=SINKS, window=WINDOW), new=24)
        assert torch.equal(alone[0], batched[row])
    padded = torch.ones(2, PROMPT, dtype=torch.long)
    padded[0, :3] = 0
    with pytest.raises(PaddedBatchError, match="left-padded batches are refused"):
        model.generate(ids, attention_mask=padded, past_key_values=SinkCache(model), max_new_tokens=2, pad_token_id=0)


SCALED = {
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64},
    "dynamic": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
}


@pytest.mark.parametrize("kind", sorted(SCALED))
def test_scaled_rope_types_stream_with_their_own_frequencies(kind):
    model, ids = tiny(rope_parameters=SCALED[kind]), prompt()
    sequence, logits = greedy(model, ids, SinkCache(model, sinks=SINKS, window=WINDOW))
    ours = project_loop(model, sequence, SinkWindowPolicy(SINKS, SINKS + WINDOW), PROMPT)
    assert (logits - ours).abs().max() < 1e-4
    if kind != "dynamic":  # dynamic keeps the default frequencies inside the original window
        assert rope_of(model).inv_freq_values is not None
        assert rope_of(model).inv_freq().tolist() != pytest.approx(rope_of(tiny()).inv_freq().tolist(), rel=1e-3)


def test_dynamic_rope_past_its_window_and_unsupported_rope_types_are_refused():
    model = tiny(rope_parameters=SCALED["dynamic"], max_position_embeddings=24)
    with pytest.raises(ValueError, match="dynamic NTK RoPE"):
        greedy(model, prompt(), SinkCache(model, sinks=SINKS, window=WINDOW))
    yarn = tiny(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64})
    with pytest.raises(NotImplementedError, match="'yarn'"):
        SinkCache(yarn)


def test_beam_search_is_refused_with_one_line():
    model = tiny()
    with pytest.raises(NotImplementedError, match="beam search"):
        model.generate(prompt(), past_key_values=SinkCache(model), max_new_tokens=3, num_beams=2, do_sample=False, pad_token_id=0)


def test_the_mask_sees_the_kept_keys_just_before_the_new_tokens():
    """get_mask_sizes comes before update: it predicts how many keys the step returns, and places
    the kept ones right before the new tokens so the model's causal mask shows them all."""
    model = tiny()
    cache = SinkCache(model, sinks=SINKS, window=WINDOW)
    for t in range(30):
        model(prompt(length=1, seed=t), past_key_values=cache)
    assert cache.get_seq_length() == 30
    assert cache.get_mask_sizes(1, 0) == (SINKS + WINDOW + 1, 30 - SINKS - WINDOW)
    ring = StreamingCache(model, Ring(2, 6))
    for t in range(3):
        model(prompt(length=1, seed=t), past_key_values=ring)
    assert ring.get_mask_sizes(1, 0) == (4, 0)  # 3 filled + the new one


def test_scoring_policies_need_the_streaming_attention_which_scores_every_key():
    """H2O and participative compression select by attention mass: the model's own attention does
    not return it, so they are refused there; through the streaming attention each query adds one
    unit of mass per head and row to the keys it sees, and the policy then keeps the heavy hitters."""
    from shared.streaming import HeavyHitters

    model, ids = tiny(seed=3), prompt(length=40, seed=3)
    policy = HeavyHitters(budget=12, recent=4, sinks=1)
    with pytest.raises(ValueError, match="selects by attention scores.*streamlab_streaming"):
        model(ids[:, :3], past_key_values=StreamingCache(model, policy))
    cache = StreamingCache(model, policy)
    with attn_implementation(model, ATTN_IMPLEMENTATION):
        for t in range(5):
            model(ids[:, t : t + 1], past_key_values=cache)
        layer = cache.layers[0].cache
        assert layer.score[: layer.length].sum().item() == pytest.approx(5 * model.config.num_attention_heads, rel=1e-5)
        sequence, logits = greedy(model, ids, StreamingCache(model, policy), new=16)
    ours = project_loop(model, sequence, policy, 40)  # the same feeding: the prompt as one chunk, then token by token
    assert (logits - ours).abs().max() < 1e-4


@pytest.mark.slow
def test_a_compiled_model_decodes_through_the_sink_cache_without_recompiling():
    """torch.compile(model) with a SinkCache: once the cache is full (fixed shapes), decode steps
    reuse the compiled graphs; fail_on_recompile turns any recompilation into an error. 31 s here
    with a warm Inductor cache (110 s cold, on 2 busy cores), most of it compiling while the cache fills."""
    model = tiny()
    cache = SinkCache(model, sinks=SINKS, window=WINDOW)
    compiled = torch.compile(model)
    ids = prompt(length=60)
    with torch.no_grad():
        for t in range(30):  # the cache fills at 17 tokens; shapes settle after it
            compiled(ids[:, t : t + 1], past_key_values=cache)
        with torch.compiler.set_stance("fail_on_recompile"):
            logits = [compiled(ids[:, t : t + 1], past_key_values=cache).logits for t in range(30, 60)]
    eager = SinkCache(model, sinks=SINKS, window=WINDOW)
    with torch.no_grad():
        want = [model(ids[:, t : t + 1], past_key_values=eager).logits for t in range(60)][30:]
    assert max((a - b).abs().max().item() for a, b in zip(logits, want)) < 1e-4
