"""Weak labels (brief test 6) and the forced aligner on real prompts."""

import numpy as np
import pytest
import torch

from ..align import AlignmentError, Word, align, align_or_none, spoken_form
from ..targets import (
    IGNORE,
    TokenSequence,
    sample_chunk_steps,
)


class CharTokenizer:
    """One token per character (ids 10+): makes token counts per word obvious."""

    class _Enc:
        def __init__(self, ids):
            self.ids = ids

    def encode(self, text, add_special_tokens=False):
        return self._Enc([10 + ord(c) % 50 for c in text])


WORDS = [Word("ab", 0.0, 0.4), Word("c", 0.5, 0.6)]


@pytest.mark.parametrize("start", [[1, 2], [1, 3, 4, 2]])  # tiny.en's 2-token and multilingual 4-token starts
def test_token_end_times_and_chunk_labels(start):
    seq = TokenSequence.build(CharTokenizer(), WORDS, start, eot_id=0)
    n = len(start)
    # " ab" = 3 tokens over [0, 0.4]; " c" = 2 tokens over [0.5, 0.6]
    ends = seq.label_end[n - 1 :].tolist()
    assert ends == pytest.approx([0.4 / 3, 0.8 / 3, 0.4, 0.55, 0.6, 1.1])
    assert seq.label_end[: n - 1].tolist() == [0.0] * (n - 1)
    assert seq.input_ids.tolist()[:n] == start and seq.labels[-1] == 0
    at = seq.labels_at(0.3)  # start labels and the first two tokens of " ab", then EOT
    assert at.tolist() == seq.labels.tolist()[: n - 1 + 2] + [0] + [IGNORE] * 3
    assert seq.labels_at(0.0).tolist()[: n] == seq.labels.tolist()[: n - 1] + [0]
    everything = seq.labels_at(5.0)
    assert torch.equal(everything, seq.labels) and everything[0] != 0  # the true final EOT, first label intact
    assert seq.labels_at(0.6).tolist()[-1] == 0 and seq.labels_at(0.6).tolist()[-2] == seq.labels[-2]


def test_chunk_step_sampling():
    rng = np.random.default_rng(0)
    picked = sample_chunk_steps(40, 0.25, rng)
    assert len(picked) == 11 and list(picked) == sorted(set(picked.tolist()))
    assert sample_chunk_steps(7, 1.0, rng).tolist() == list(range(7))


def test_numerals_are_spelled_for_the_aligner():
    assert spoken_form("500,") == ["five", "hundred"]
    assert spoken_form("28.8") == ["twenty", "eight", "point", "eight"]
    assert spoken_form("you'd") == ["you'd"]


def test_alignment_of_a_real_prompt_is_ordered_and_inside_the_audio(asterisk):
    from ..speech import load_audio

    prompt = asterisk["auth-incorrect"]
    audio = load_audio(prompt.path)
    words = align(audio, prompt.text, cache=False)  # the aligner itself, not a cached answer
    assert [w.text for w in words] == prompt.text.split()
    ends = [w.end for w in words]
    assert ends == sorted(ends) and 0 < ends[0] and ends[-1] <= len(audio) / 16000 + 0.02
    assert all(w.end > w.start for w in words)
    with pytest.raises(AlignmentError, match="dictionary"):
        align(audio, "please unmute zzyzzyx", cache=False)
    assert align_or_none(audio, "please unmute zzyzzyx") is None and align_or_none(audio, prompt.text) == words


def test_cached_alignments_are_the_aligners_own_and_keyed_by_audio_and_text(asterisk, tmp_path, monkeypatch):
    from .. import align as aligner
    from ..speech import load_audio

    monkeypatch.setenv("STREAMLAB_OUTPUTS", str(tmp_path))
    audio = load_audio(asterisk["auth-incorrect"].path)
    text = asterisk["auth-incorrect"].text
    fresh = align(audio, text, cache=False)
    assert align(audio, text) == fresh and len(list((tmp_path / "cache" / "align").glob("*.json"))) == 1
    with pytest.raises(AlignmentError, match="dictionary"):
        align(audio, "please zzyzzyx")
    calls = []
    monkeypatch.setattr(aligner, "_align", lambda a, t: calls.append(t) or [aligner.Word("x", 0.0, 0.1)])
    assert align(audio, text) == fresh and calls == []  # read back, not recomputed, times exact
    with pytest.raises(AlignmentError, match="zzyzzyx"):  # failures are remembered with their message
        align(audio, "please zzyzzyx")
    louder = audio * np.float32(0.5)
    align(louder, text)
    align(audio, text.lower())
    assert calls == [text, text.lower()]  # other samples or other text: a new key, the aligner runs


@pytest.fixture(scope="module")
def asterisk():
    from ..speech import load_prompts

    return {p.name: p for p in load_prompts()}
