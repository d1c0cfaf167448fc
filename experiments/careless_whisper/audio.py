"""Whisper's log-mel front end, streamed (brief 2.4).

Frame ``k`` is the 400-sample Hann window centred on sample ``160 k`` (offline Whisper's
``torch.stft(center=True)``; the first 200 samples are reflect-padded as offline), so it exists as
soon as sample ``160 k + 199`` has arrived. Power spectrum -> Whisper's 80 mel filters -> log10 ->
clamp at ``running_max - 8`` (the maximum over frames so far, this one included) -> ``(x + 4) / 4``. Offline Whisper clamps against the whole
utterance's maximum, which a stream cannot know; the running maximum over the frames so far is
the causal version (as upstream). Training computes its features with the same ``StreamingMel``,
so training and streaming inputs are identical.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16_000
N_FFT, HOP = 400, 160


@lru_cache(maxsize=1)
def mel_filters() -> torch.Tensor:
    """[80, 201] Slaney-style mel filterbank, exactly transformers' WhisperFeatureExtractor's."""
    from transformers import WhisperFeatureExtractor

    return torch.from_numpy(WhisperFeatureExtractor(feature_size=80).mel_filters.T.copy()).float()


def log_power_mel(frames: torch.Tensor) -> torch.Tensor:
    """[..., n, 400] windows -> [..., 80, n] log10 mel power (before the clamp and scaling)."""
    spec = torch.fft.rfft(frames * torch.hann_window(N_FFT, dtype=frames.dtype), dim=-1).abs() ** 2
    return torch.clamp(mel_filters().to(frames.dtype) @ spec.transpose(-1, -2), min=1e-10).log10()


class StreamingMel:
    """Push audio (float32 at 16 kHz) in pieces of any size; get the new normalised mel frames."""

    def __init__(self):
        self.buffer = torch.zeros(0)  # samples not yet covered by a complete window (plus the overlap)
        self.started = False  # the left reflect-padding needs the first 201 samples
        self.frames = 0
        self.running_max = -torch.inf
        self.samples = 0  # real samples received

    def push(self, audio: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[80, new_frames] normalised mel frames that became complete with ``audio``."""
        audio = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        self.samples += len(audio)
        self.buffer = torch.cat([self.buffer, audio])
        if not self.started:
            if len(self.buffer) <= N_FFT // 2:
                return torch.zeros(80, 0)
            self.buffer = torch.cat([self.buffer[1 : N_FFT // 2 + 1].flip(0), self.buffer])  # offline's reflect padding
            self.started = True
        n = (len(self.buffer) - N_FFT) // HOP + 1 if len(self.buffer) >= N_FFT else 0
        if n <= 0:
            return torch.zeros(80, 0)
        windows = self.buffer.unfold(0, N_FFT, HOP)[:n]
        self.buffer = self.buffer[n * HOP :]
        log_mel = log_power_mel(windows.double()).float()
        # the maximum over frames up to and including each frame: a frame's features do not depend
        # on how the audio was cut into pushes (so training's and the stream's features agree)
        running = torch.cummax(torch.clamp(log_mel.amax(dim=0), min=self.running_max), dim=0).values
        self.running_max = float(running[-1])
        self.frames += n
        return (torch.maximum(log_mel, running - 8.0) + 4.0) / 4.0

    @property
    def seconds(self) -> float:
        """Audio received so far."""
        return self.samples / SAMPLE_RATE


def streamed_mel(audio: np.ndarray, piece_samples: int) -> torch.Tensor:
    """The mel a stream sees when ``audio`` arrives ``piece_samples`` at a time: [80, frames]."""
    mel = StreamingMel()
    parts = [mel.push(audio[i : i + piece_samples]) for i in range(0, len(audio), piece_samples)]
    return torch.cat(parts, dim=1)


def offline_log_mel(audio: np.ndarray) -> torch.Tensor:
    """Offline frames (torch.stft, centre=True, reflect) before normalisation, for tests: [80, frames]."""
    x = torch.from_numpy(np.asarray(audio, dtype=np.float64))
    stft = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT, dtype=torch.float64), return_complex=True)
    return torch.clamp(mel_filters().double() @ stft.abs() ** 2, min=1e-10).log10()
