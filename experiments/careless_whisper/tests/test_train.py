"""Training details that a wrong implementation gets wrong: speed perturbation keeps the aligned
times consistent with the audio, and the schedule warms up and decays to zero."""

import numpy as np
import pytest

from experiments.careless_whisper.train import change_speed, warmup_cosine


@pytest.mark.parametrize("speed", [0.9, 1.1])
def test_speed_change_scales_duration_and_pitch_together(speed):
    rate, f0 = 16000, 300.0
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * f0 * t).astype(np.float32)
    out = change_speed(tone, speed)
    assert out.dtype == np.float32 and abs(len(out) - rate / speed) <= 1
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert abs(np.argmax(spectrum) * rate / len(out) - f0 * speed) < 2  # resampling: pitch moves with tempo
    assert change_speed(tone, 1.0) is tone


def test_warmup_then_cosine_to_zero():
    f = warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-12) and f(500) == pytest.approx(0.0, abs=1e-12)
    assert all(f(i) >= f(i + 1) for i in range(10, 120))
