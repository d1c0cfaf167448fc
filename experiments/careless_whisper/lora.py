"""LoRA on every attention of Whisper (brief 2.3) through peft: q, k, v and out projections of the
encoder self-attention and the decoder self- and cross-attention; alpha = r (scale 1), no dropout,
B = 0 so an untrained adapter is exactly Whisper.

peft initialises A with bound 1/sqrt(in_features); upstream's A is U(-1/sqrt(r), 1/sqrt(r))
(kaiming on an (in x r) tensor). ``init="upstream"`` (default) re-draws A that way.
"""

from __future__ import annotations

import math

import torch

TARGETS = {
    # upstream: every attention's q, k, v and out
    "all": ["q_proj", "k_proj", "v_proj", "out_proj"],
    # the encoder's self-attention and the decoder's cross-attention only: the decoder's own language
    # model (its self-attention) stays Whisper's, so a few hundred prompts cannot overwrite it
    "encoder_cross": r"model\.(encoder\.layers\.\d+\.self_attn|decoder\.layers\.\d+\.encoder_attn)\.(q|k|v|out)_proj",
}


def add_lora(model, rank: int, init: str = "upstream", seed: int = 0, targets: str = "all"):
    """The peft-wrapped model; only LoRA tensors require grad."""
    from peft import LoraConfig, get_peft_model

    if targets not in TARGETS:
        raise ValueError(f"lora targets {targets!r}; valid: {', '.join(TARGETS)}")
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none", target_modules=TARGETS[targets])
    wrapped = get_peft_model(model, config)
    if init == "upstream":
        generator = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(rank)
        with torch.no_grad():
            for name, param in wrapped.named_parameters():
                if "lora_A" in name:
                    param.copy_(torch.rand(param.shape, generator=generator) * 2 * bound - bound)
    elif init != "peft":
        raise ValueError(f"lora init {init!r}; valid: upstream, peft")
    return wrapped


def lora_parameters(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
