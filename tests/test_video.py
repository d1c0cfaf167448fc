"""shared.video: PyAV round trip and clear errors for bad files."""

import numpy as np
import pytest

from shared.errors import DataError
from shared.video import read_video, write_video


def test_roundtrip_is_near_lossless_at_crf_0(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.integers(-3, 4, size=(5, 24, 32, 3)), axis=2).clip(-100, 100) + 128
    frames = smooth.astype(np.uint8)
    path = write_video(tmp_path / "clip.mp4", frames, fps=25)
    back = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 2.0
    assert read_video(path, max_frames=2).shape[0] == 2
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, no temporary left behind


def test_bad_files_name_themselves(tmp_path):
    with pytest.raises(DataError, match="no such video file"):
        read_video(tmp_path / "missing.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 certainly not a video")
    with pytest.raises(DataError, match="broken.mp4: cannot decode"):
        read_video(broken)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 4, 4, 3), dtype=np.float32))
