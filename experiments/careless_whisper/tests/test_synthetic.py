"""Synthetic training voices: the text is clean and never a test sentence, every voice speaks the
words it is given (offline tiny.en hears them), rates stretch the audio, files are cached."""

import pytest

COOKIES = """A banker is a fellow who lends you his umbrella when the sun is shining
and wants it back the minute it begins to rain.
		-- Mark Twain
%
Call 555-1234 now!  Be brief.  Wisdom is knowing what to do next, virtue is doing it.
%
"Quoted words are dropped," he said.  Never put off until tomorrow what you can do today -- or later.
%
Be brief.
%
Be kind to your many friends.
		-- An old proverb of the north.
"""


@pytest.fixture
def fortunes(tmp_path):
    for name in ("literature", "wisdom"):
        (tmp_path / name).write_text(COOKIES if name == "literature" else "Nothing here but three words.\n%\nGo.\n", encoding="latin-1")
    from ..synthetic import FORTUNE_FILES

    for name in FORTUNE_FILES:
        if not (tmp_path / name).exists():
            (tmp_path / name).write_text("", encoding="latin-1")
    return tmp_path


def test_fortune_sentences_drop_attributions_digits_quotes_and_duplicates(fortunes):
    from ..synthetic import fortune_sentences

    found = fortune_sentences(fortunes)
    assert "Be brief." not in found  # 2 words: too short (and the duplicate is not listed twice either)
    assert not any("Twain" in s or "555" in s or '"' in s for s in found)
    assert "Wisdom is knowing what to do next, virtue is doing it." in found
    assert "Never put off until tomorrow what you can do today, or later." in found  # "--" read as a pause
    assert "Nothing here but three words." in found  # a second file is read too
    assert "Be kind to your many friends." in found and "An old proverb of the north." not in found  # attributions
    assert all(4 <= len(s.split()) <= 16 for s in found)  # the 22-word banker sentence is too long


def test_a_sentence_sharing_four_words_with_a_test_reference_is_left_out(fortunes):
    from ..synthetic import usable_sentences

    def both(held_out):
        return usable_sentences(held_out, fortunes, "train") + usable_sentences(held_out, fortunes, "validation")

    every = both([])
    held = both(["so what to do next is a question"])  # shares "what to do next"
    assert "Wisdom is knowing what to do next, virtue is doing it." in every
    assert [s for s in every if s not in held] == ["Wisdom is knowing what to do next, virtue is doing it."]
    assert both(["what to do"]) == every  # three shared words are allowed


def test_validation_sentences_are_never_trained_on(fortunes, monkeypatch):
    """One sentence in ten is held back for the validation set by a hash of its text: the two
    splits are disjoint, together are every sentence, and a sentence stays in its split whatever
    else the files hold."""
    from .. import synthetic

    monkeypatch.setattr(synthetic, "fortune_sentences", lambda folder=None: [f"Sentence number {i} of the many here." for i in range(400)])
    train, validation = synthetic.usable_sentences([], split="train"), synthetic.usable_sentences([], split="validation")
    assert not set(train) & set(validation) and len(train) + len(validation) == 400
    assert 20 <= len(validation) <= 60  # about one in ten
    monkeypatch.setattr(synthetic, "fortune_sentences", lambda folder=None: [f"Sentence number {i} of the many here." for i in range(0, 400, 3)])
    assert set(synthetic.usable_sentences([], split="validation")) == {s for s in validation if int(s.split()[2]) % 3 == 0}
    with pytest.raises(ValueError, match="split"):
        synthetic.usable_sentences([], split="test")


def test_missing_fortunes_are_one_clear_error(tmp_path):
    from shared.errors import DataError

    from ..synthetic import fortune_sentences

    with pytest.raises(DataError, match="make setup"):
        fortune_sentences(tmp_path)


@pytest.fixture(scope="module")
def tiny():
    from ..decode import Vocabulary
    from ..weights import load_whisper

    model, data_dir = load_whisper("tiny.en")
    return model, Vocabulary(data_dir)


@pytest.mark.parametrize("voice", ["awb", "slt", "joe"])
def test_every_voice_says_its_words_and_the_rate_stretches_them(voice, tiny):
    from ..baselines import offline
    from ..metrics import wer
    from ..synthetic import FLITE_VOICES, say, share

    if voice in FLITE_VOICES and not (share() / "usr/bin/flite").is_file():
        pytest.skip("flite is not installed (env/synthetic.sh)")
    pytest.importorskip("piper")
    text = "Please leave your message after the tone, then hang up."
    normal = say(text, voice, 1.0)
    fast, slow = say(text, voice, 0.85), say(text, voice, 1.15)  # Piper draws durations with noise: compare far apart
    assert normal.dtype.name == "float32" and 2.0 < len(normal) / 16000 < 6.0
    assert 1.1 < len(slow) / len(fast) < 1.5  # 1.35 as asked for flite, 1.16-1.22 for Piper (its pauses do not stretch)
    heard = offline(*tiny, normal).text
    assert wer([text], [heard])["wer"] < 0.15, heard


def test_synthetic_prompts_are_cached_and_reproducible(tmp_path, monkeypatch):
    import numpy as np

    from .. import synthetic

    calls = []

    def fake_say(text, voice, stretch=1.0, seed=0):  # the engines are tested above; here only the bookkeeping
        calls.append((text, voice, round(stretch, 6)))
        return np.full(1600, 0.1, np.float32)

    monkeypatch.setattr(synthetic, "say", fake_say)
    splits = set()

    def usable(held_out, split="train"):
        splits.add(split)
        return [f"sentence number {w}" for w in ("one", "two", "three", "four")]

    monkeypatch.setattr(synthetic, "usable_sentences", usable)
    first = synthetic.synthetic_prompts(3, tmp_path / "a", [], seed=5, voices=("awb", "joe"))
    again = synthetic.synthetic_prompts(3, tmp_path / "a", [], seed=5, voices=("awb", "joe"))
    assert len(calls) == 3 and first == again  # the second call reads the WAVs it wrote
    assert splits == {"train"}  # training never draws the validation sentences
    assert len({p.text for p in first}) == 3 and all(p.path.is_file() and p.name.startswith("synthetic/") for p in first)
    assert {v for _, v, _ in calls} <= {"awb", "joe"} and all(0.85 <= s <= 1.15 for *_, s in calls)
    with pytest.raises(Exception, match="only 4 usable"):
        synthetic.synthetic_prompts(5, tmp_path / "b", [], seed=5)
