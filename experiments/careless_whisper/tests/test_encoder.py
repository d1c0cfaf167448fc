"""The causal encoder (brief tests 3-4): the block mask, equality with transformers when nothing is
masked, and incremental == masked prefix == truncated input."""

import pytest
import torch

from shared.streaming.masks import dense_mask

from ..encoder import (
    Chunking,
    IncrementalEncoder,
    encode_prefix,
)
from ..weights import load_whisper


@pytest.fixture(scope="module")
def encoder():
    model, _ = load_whisper("tiny.en")
    return model.model.encoder


@pytest.mark.parametrize("chunk_ms,extra", [(40, 14), (100, 5), (200, 2), (300, 1), (1000, 0)])
def test_released_chunkings_and_the_papers_visibility_rule(chunk_ms, extra):
    ch = Chunking(chunk_ms)
    g = ch.g
    assert ch.extra_blocks == extra and g == chunk_ms // 20
    n = 4 * (extra + 1) * g + 7
    pos = torch.arange(n)
    rule = torch.tensor([[j // g <= max(i // g, extra) for j in range(n)] for i in range(n)])
    assert torch.equal(dense_mask(ch.mask, pos, pos), rule)


def test_invalid_chunk_sizes_are_refused():
    with pytest.raises(ValueError, match="multiple of 20"):
        Chunking(150)
    with pytest.raises(ValueError, match="first block"):
        Chunking(1000, first_ms=600)


def test_unmasked_encoder_is_transformers_encoder_on_30_s(encoder):
    mel = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0)) * 0.5
    with torch.no_grad():
        ref = encoder(mel).last_hidden_state
        ours = encode_prefix(encoder, torch.nn.functional.pad(mel, (0, 1)), 1500, None)
        all_visible = encode_prefix(encoder, torch.nn.functional.pad(mel, (0, 1)), 1500, Chunking(1000, first_ms=30000))
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
    assert torch.allclose(all_visible, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_ms", [40, 300])
def test_incremental_encoder_equals_masked_prefix_in_float64(encoder, chunk_ms):
    ch = Chunking(chunk_ms)
    enc = encoder.double()
    try:
        mel = torch.randn(1, 80, 2 * 130 + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            full = encode_prefix(enc, mel, 130, ch)
            inc, outs, n = IncrementalEncoder(enc, ch), [], ch.first_frames
            while n <= 130:
                outs.append(inc.step(mel[..., : 2 * n + 1], n))
                n += ch.g
            got = torch.cat(outs, 1)
            truncated = encode_prefix(enc, mel[..., : 2 * 60 + 1], 60, ch)
        assert torch.allclose(got, full[:, : got.shape[1]], atol=1e-10, rtol=0)
        assert torch.allclose(truncated, full[:, :60], atol=1e-10, rtol=0)  # future audio never leaks back
        unmasked = encode_prefix(enc, mel, 130, None)
        assert not torch.allclose(unmasked[:, :60], full[:, :60], atol=1e-3)  # the mask does something
    finally:
        encoder.float()


def test_encoder_refuses_frames_without_their_look_ahead(encoder):
    with pytest.raises(ValueError, match="mel frames"):
        encode_prefix(encoder, torch.zeros(1, 80, 100), 50, Chunking(300))
