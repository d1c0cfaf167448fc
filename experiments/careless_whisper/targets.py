"""Weakly aligned training targets (brief 2.5): at the end of every chunk, the tokens whose aligned
end time has passed, then end-of-text; nothing after.

    seq = TokenSequence.build(tokenizer, words, start_ids, eot_id)      # teacher-forced input + labels + end times
    labels = seq.labels_at(t=1.2)                                       # [..., finished tokens, EOT, -100, -100, ...]

A word ``[s, e]`` written as ``n`` tokens gives token ``k`` (1-based) the end time ``s + k (e - s) / n``.
Every word is tokenised with a leading space, as Whisper itself writes transcripts (upstream omits
it on the first word). The final EOT becomes available 0.5 s after the last word ends; the start
tokens' labels (e.g. ``<|notimestamps|>``) are available at time 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100
EOT_DELAY = 0.5


@dataclass
class TokenSequence:
    input_ids: torch.Tensor  # [L]: start tokens + text tokens
    labels: torch.Tensor  # [L]: input shifted by one, then EOT
    label_end: torch.Tensor  # [L] float64 seconds: when each label becomes available
    eot_id: int
    n_start: int

    @classmethod
    def build(cls, tokenizer, words, start_ids: list[int], eot_id: int) -> TokenSequence:
        text_ids, ends = [], []
        for word in words:
            ids = tokenizer.encode(" " + word.text, add_special_tokens=False).ids
            n = len(ids)
            text_ids += ids
            ends += [word.start + (k + 1) * (word.end - word.start) / n for k in range(n)]
        input_ids = list(start_ids) + text_ids
        labels = input_ids[1:] + [eot_id]
        last = ends[-1] if ends else 0.0
        label_end = [0.0] * (len(start_ids) - 1) + ends + [last + EOT_DELAY]
        return cls(torch.tensor(input_ids), torch.tensor(labels), torch.tensor(label_end, dtype=torch.float64), eot_id, len(start_ids))

    def labels_at(self, t: float) -> torch.Tensor:
        """Labels for a chunk ending at ``t`` seconds: available ones, then one EOT, then ignored."""
        available = self.label_end <= t + 1e-9
        out = torch.full_like(self.labels, IGNORE)
        # the first unavailable position (not argmin over the mask, which breaks when all are available)
        first_missing = int(available.logical_not().nonzero()[0]) if not bool(available.all()) else len(self.labels)
        out[:first_missing] = self.labels[:first_missing]
        if first_missing < len(self.labels):
            out[first_missing] = self.eot_id
        return out


def sample_chunk_steps(n_steps: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Which chunk ends of an utterance become training points: ``int(n * fraction) + 1`` of the
    ``n`` candidates without replacement, sorted (all of them when ``fraction >= 1``)."""
    if fraction >= 1:
        return np.arange(n_steps)
    k = min(n_steps, int(n_steps * fraction) + 1)
    return np.sort(rng.choice(n_steps, size=k, replace=False))
