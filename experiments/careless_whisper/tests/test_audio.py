"""The streamed log-mel front end (brief test 7) and audio loading."""

import numpy as np
import pytest
import torch

from shared.errors import DataError

from ..audio import (
    StreamingMel,
    offline_log_mel,
    streamed_mel,
)
from ..speech import clean_transcript, load_audio


@pytest.mark.parametrize("piece", [1, 37, 160, 4800, 10**6])
def test_streamed_frames_equal_offline_stft_before_normalisation(piece):
    rng = np.random.default_rng(piece)
    audio = (rng.normal(size=16000 * 2) * np.linspace(0.01, 0.5, 32000)).astype(np.float32)  # loudness grows
    mel, maxes, parts = StreamingMel(), [], []
    for i in range(0, len(audio), piece):
        parts.append(mel.push(audio[i : i + piece]))
        maxes.append(mel.running_max)
    got = torch.cat(parts, 1)
    offline = offline_log_mel(audio)
    n = got.shape[1]
    assert n == (len(audio) + 200 - 400) // 160 + 1 and n >= offline.shape[1] - 2
    log = got * 4 - 4
    final_max = float(offline[:, :n].max())
    unclamped = log > final_max - 8 + 1e-4  # values never clamped are the raw log-mel
    assert torch.allclose(log[unclamped].double(), offline[:, :n][unclamped], atol=2e-6)
    finite = [m for m in maxes if np.isfinite(m)]
    assert finite == sorted(finite) and finite[-1] == pytest.approx(final_max, abs=1e-5)
    # frames pushed after the running max reached the utterance max are normalised exactly as offline
    whole = ((torch.maximum(offline[:, :n], torch.tensor(final_max - 8.0)) + 4) / 4).float()
    assert torch.allclose(got[:, -10:], whole[:, -10:], atol=1e-6)


def test_normalisation_is_causal_running_max():
    quiet_then_loud = np.concatenate([np.full(16000, 1e-3), np.random.default_rng(0).normal(size=16000)]).astype(np.float32)
    early = streamed_mel(quiet_then_loud[:16000], 1600)
    whole = streamed_mel(quiet_then_loud, 1600)
    assert torch.equal(early, whole[:, : early.shape[1]])  # loud audio later never changes earlier frames


def test_audio_loading_resamples_mixes_and_fails_clearly(tmp_path):
    import soundfile as sf

    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1).astype(np.float32) * 0.5
    sf.write(tmp_path / "a.wav", stereo, 8000)
    audio = load_audio(tmp_path / "a.wav")
    assert audio.shape == (16000,) and audio.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(audio[2000:14000]))
    assert abs(np.argmax(spectrum) * 16000 / 12000 - 440) < 3  # still a 440 Hz tone at the new rate
    with pytest.raises(DataError, match="no such"):
        load_audio(tmp_path / "none.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really")
    with pytest.raises(DataError, match="cannot read"):
        load_audio(tmp_path / "junk.wav")
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(DataError, match="empty"):
        load_audio(tmp_path / "empty.wav")


def test_transcript_cleaning_drops_non_speech_and_annotations():
    assert clean_transcript("[this is a simple beep tone]") is None
    assert clean_transcript("(5 seconds of silence)") is None
    assert clean_transcript("at [@]") == "at"
    assert clean_transcript("Please leave your message after the tone. (simple tone sound plays)") == "Please leave your message after the tone."


def test_keypad_symbols_are_read_as_words():
    assert clean_transcript("separated by * and then press #") == "separated by star and then press pound"


def test_features_do_not_depend_on_how_the_audio_was_cut():
    """The clamp uses the maximum over frames up to each frame, so pushes of any size give the same
    frames (training cuts at chunk ends, the stream where each chunk becomes decodable)."""
    g = np.random.default_rng(1)
    audio = np.concatenate([np.full(8000, 1e-3), g.normal(size=8000) * np.linspace(0.01, 1, 8000), g.normal(size=8000) * 0.1]).astype(np.float32)
    reference = streamed_mel(audio, len(audio))
    for piece in (160, 4800, 4999):
        assert torch.allclose(streamed_mel(audio, piece), reference, atol=1e-6)
