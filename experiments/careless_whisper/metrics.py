"""WER with Whisper's English normaliser, word emission lag, real-time factor.

The normaliser is transformers' ``EnglishTextNormalizer`` (Whisper's: numbers to digits, casing,
punctuation, fillers) with an empty British-to-American spelling map (the file it normally loads is
not packaged with these weights; the speech is American), plus one fix: an ellipsis ("...") leaves
a stray "." token there, which we drop. Both sides of every comparison go through it.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1)
def _normaliser():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"(?<!\w)[^\w\s']+(?!\w)", " ", _normaliser()(text))).strip()


def wer(references: list[str], hypotheses: list[str]) -> dict:
    """Corpus WER (jiwer) over normalised text; utterances whose reference normalises to nothing are skipped."""
    import jiwer

    pairs = [(normalise(r), normalise(h)) for r, h in zip(references, hypotheses)]
    pairs = [(r, h) for r, h in pairs if r]
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    return {"wer": out.wer, "substitutions": out.substitutions, "deletions": out.deletions, "insertions": out.insertions, "words": sum(len(r.split()) for r, _ in pairs), "utterances": len(pairs)}


def word_emissions(tokenizer, tokens: list[int], emitted_at: list[float], eot: int) -> list[tuple[str, float]]:
    """(word, time its last token was emitted): a word starts at a token beginning with a space."""
    words: list[list] = []
    for token, t in zip(tokens, emitted_at):
        if token >= eot:
            continue
        piece = tokenizer.decode([token])
        if piece.startswith(" ") or not words:
            words.append([piece.strip(), t])
        else:
            words[-1][0] += piece
            words[-1][1] = t
    return [(w, t) for w, t in words if w]


def emission_lags(emitted: list[tuple[str, float]], aligned) -> list[float]:
    """Per reference word found in order in the hypothesis: emission time minus its aligned end.
    Matching is by normalised spelling along a monotone path (jiwer's alignment of the two word lists)."""
    import jiwer

    ref = [normalise(w.text) for w in aligned]
    hyp = [normalise(w) for w, _ in emitted]
    keep_r = [i for i, w in enumerate(ref) if w]
    keep_h = [i for i, w in enumerate(hyp) if w]
    if not keep_r or not keep_h:
        return []
    out = jiwer.process_words(" ".join(ref[i] for i in keep_r), " ".join(hyp[i] for i in keep_h))
    lags = []
    for chunk in out.alignments[0]:
        if chunk.type == "equal":
            for k in range(chunk.ref_end_idx - chunk.ref_start_idx):
                r = keep_r[chunk.ref_start_idx + k]
                h = keep_h[chunk.hyp_start_idx + k]
                lags.append(emitted[h][1] - aligned[r].end)
    return lags
