"""WER normalisation and emission lags on hand-made cases with a known answer."""

import pytest

from ..align import Word
from ..metrics import emission_lags, normalise, wer


def test_wer_normalises_case_punctuation_and_numbers():
    assert wer(["Please press 1, then the pound key."], ["please press one then the pound key"])["wer"] == 0
    assert wer(["press 2 to exit"], ["press 3 to exit now"])["wer"] == pytest.approx(2 / 4)
    assert normalise("...to decrease the volume.") == normalise("To decrease the volume...")


def test_lags_match_words_in_order_even_when_the_normaliser_splits_them():
    aligned = [Word("kick", 0.0, 0.4), Word("all", 0.4, 0.6), Word("non-administrator", 0.6, 1.5), Word("users.", 1.5, 2.0)]
    emitted = [("kick", 0.9), ("all", 0.9), ("non-administrator", 1.8), ("users", 2.4)]
    assert emission_lags(emitted, aligned) == pytest.approx([0.5, 0.3, 0.3, 0.4])
    # a missing word and an inserted one: only matched words count, each reference word once
    emitted = [("kick", 0.9), ("them", 1.0), ("non", 1.5), ("administrator", 1.8), ("users", 2.4)]
    assert emission_lags(emitted, aligned) == pytest.approx([0.5, 0.3, 0.4])  # split word: its last piece
    assert emission_lags([], aligned) == []


def test_the_wer_figure_has_no_negative_axis():
    from omegaconf import OmegaConf

    from ..reproduce import figure_wer

    cfg = OmegaConf.create({"eval": {"rows": ["offline", "causal_untuned", "careless_whisper"]}})
    results = {("offline", None): {"wer": 4.3}, ("causal_untuned", 300): {"wer": 2575.0}, ("causal_untuned", 1000): {"wer": 1013.0},
               ("careless_whisper", 300): {"wer": 6.6}, ("careless_whisper", 1000): {"wer": 5.1}}
    ax = figure_wer(results, cfg).axes[0]
    assert ax.get_ylim()[0] == 0 and all(t >= 0 for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["300", "1000"]


def test_the_paired_wer_difference_and_its_standard_error():
    import numpy as np

    from ..metrics import paired_difference

    words = np.array([4, 6, 10, 3, 7])
    a = np.array([1.0, 0.0, 2.0, 0.0, 1.0])
    assert paired_difference(a, a, words) == (0.0, 0.0)  # the same utterances for both: no spread
    diff, se = paired_difference(a, np.zeros(5), words)
    assert diff == 100 * 4 / 30 and 0 < se < diff
    shifted, _ = paired_difference(a + 1, a, words)
    assert shifted == 100 * 5 / 30


def test_a_loop_is_a_word_repeated_more_than_three_times_where_the_reference_has_none():
    from ..metrics import longest_run, loops

    assert longest_run("to, to, to, To.") == 4 and longest_run("") == 0 and longest_run("a b a b") == 1
    assert longest_run("front front front") == 3
    refs = ["press star", "no no no no", "goodbye"]
    hyps = ["press star star star star", "no no no no no", "goodbye goodbye goodbye"]
    assert loops(refs, hyps) == 1  # the reference's own run is not a loop; three in a row is allowed
