"""WER with Whisper's English normaliser, word emission lag, real-time factor.

The normaliser is transformers' ``EnglishTextNormalizer`` (Whisper's: numbers to digits, casing,
punctuation, fillers) with an empty British-to-American spelling map (the file it normally loads is
not packaged with these weights; the speech is American), plus one fix: an ellipsis ("...") leaves
a stray "." token there, which we drop. Both sides of every comparison go through it.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np


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


def word_tokens(tokenizer, tokens: list[int], eot: int) -> list[tuple[str, int, int]]:
    """(word, index of its first token, index of its last): a word starts at a token beginning with a space."""
    words: list[list] = []
    for i, token in enumerate(tokens):
        if token >= eot:
            continue
        piece = tokenizer.decode([token])
        if piece.startswith(" ") or not words:
            words.append([piece.strip(), i, i])
        else:
            words[-1][0] += piece
            words[-1][2] = i
    return [(w, first, last) for w, first, last in words if w]


def word_emissions(tokenizer, tokens: list[int], emitted_at: list[float], eot: int) -> list[tuple[str, float]]:
    """(word, time its last token was emitted)."""
    return [(w, emitted_at[last]) for w, _, last in word_tokens(tokenizer, tokens, eot)]


def word_intervals(tokenizer, tokens: list[int], emitted_at: list[float], heard_from: list[float], eot: int) -> list[tuple[str, float, float]]:
    """(word, start, end): the audio in which the stream recognised it, from the start of the chunk
    that produced its first token to the emission of its last (``heard_from`` empty, as offline: the
    whole audio before the emission)."""
    return [(w, heard_from[first] if heard_from else 0.0, emitted_at[last]) for w, first, last in word_tokens(tokenizer, tokens, eot)]


def matched_words(hypothesis: list[str], aligned) -> dict[int, int]:
    """Reference word index -> the index of the hypothesis word matched to it (its last matched piece).

    Matching is by normalised spelling along a monotone path (jiwer's alignment of the two word
    lists). The normaliser may split a word ("non-administrator" -> "non administrator"), so both
    sides are aligned piece by piece and each piece remembers its word.
    """
    import jiwer

    def pieces(words):
        out, owner = [], []
        for i, w in enumerate(words):
            for piece in normalise(w).split():
                out.append(piece)
                owner.append(i)
        return out, owner

    ref, ref_owner = pieces([w.text for w in aligned])
    hyp, hyp_owner = pieces(hypothesis)
    if not ref or not hyp:
        return {}
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    done: dict[int, int] = {}
    for chunk in out.alignments[0]:
        if chunk.type == "equal":
            for k in range(chunk.ref_end_idx - chunk.ref_start_idx):
                r = ref_owner[chunk.ref_start_idx + k]
                done[r] = max(done.get(r, -1), hyp_owner[chunk.hyp_start_idx + k])
    return done


def emission_lags(emitted: list[tuple[str, float]], aligned) -> list[float]:
    """Per reference word found in order in the hypothesis: emission time minus its aligned end
    (a reference word counts once, emitted when its last matched piece was)."""
    done = matched_words([w for w, _ in emitted], aligned)
    return [emitted[h][1] - aligned[r].end for r, h in sorted(done.items())]


def interval_hits(intervals: list[tuple[str, float, float]], aligned, slack: float = 0.0) -> list[bool]:
    """Per matched reference word: whether its aligned end lies in the hypothesis word's
    [start - slack, end] (the interval in which the stream says it recognised the word)."""
    done = matched_words([w for w, _, _ in intervals], aligned)
    return [intervals[h][1] - slack <= aligned[r].end <= intervals[h][2] for r, h in sorted(done.items())]


def paired_difference(errors_a: np.ndarray, errors_b: np.ndarray, words: np.ndarray, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """(corpus WER of a minus b in points, its bootstrap standard error); per-utterance word errors
    and reference word counts, resampled together."""
    g = np.random.default_rng(seed)
    diff = 100 * (errors_a.sum() - errors_b.sum()) / words.sum()
    picks = g.integers(0, len(words), (draws, len(words)))
    boot = 100 * (errors_a[picks].sum(1) - errors_b[picks].sum(1)) / words[picks].sum(1)
    return float(diff), float(boot.std(ddof=1))


def longest_run(text: str) -> int:
    """The most times one normalised word repeats in a row ("to, to, to, to" -> 4; "" -> 0)."""
    words, best, run = normalise(text).split(), 0, 0
    for i, w in enumerate(words):
        run = run + 1 if i and w == words[i - 1] else 1
        best = max(best, run)
    return best


def loops(references: list[str], hypotheses: list[str], limit: int = 3) -> int:
    """Utterances whose hypothesis repeats a word more than ``limit`` times in a row where the reference does not."""
    return sum(longest_run(h) > limit >= longest_run(r) for r, h in zip(references, hypotheses))
