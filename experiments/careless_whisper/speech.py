"""Real recorded speech: the Asterisk English prompts (Debian asterisk-core-sounds-en-wav,
CC-BY-SA-3.0, Allison Smith / Digium) with their transcripts (asterisk-core-sounds-en).

    prompts = load_prompts()                       # [Prompt(name, text, path)], non-speech dropped
    train, test = split(prompts)                   # by prompt name, stable across machines
    audio = load_audio(prompts[0].path)            # float32 mono at 16 kHz (resampled from 8 kHz)

Where the files come from, in order: ``$STREAMLAB_ASTERISK`` (a folder holding
``usr/share/asterisk/sounds/en_US_f_Allison`` or the sound folder itself), the copy that
``make setup`` unpacks into ``.venv/share/asterisk`` (``apt-get download`` + ``dpkg -x``, no root),
and a system install (``apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import DataError

SAMPLE_RATE = 16_000
SOUNDS = Path("usr/share/asterisk/sounds/en_US_f_Allison")
TRANSCRIPTS = Path("usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
INSTALL_HINT = (
    "install the Asterisk English prompts: `make setup` does it where apt-get exists; elsewhere run "
    "`apt-get download asterisk-core-sounds-en-wav asterisk-core-sounds-en && for f in *.deb; do dpkg -x $f DIR; done` "
    "and set STREAMLAB_ASTERISK=DIR"
)


@dataclass(frozen=True)
class Prompt:
    name: str  # e.g. "digits/7", relative to the sound folder, no extension
    text: str  # the transcript, annotations removed
    path: Path


def roots() -> list[Path]:
    found = []
    if os.environ.get("STREAMLAB_ASTERISK"):
        found.append(Path(os.environ["STREAMLAB_ASTERISK"]))
    found += [Path(sys.prefix) / "share" / "asterisk", Path("/")]
    return found


def locate() -> tuple[Path, Path]:
    """(sound folder, transcript file)."""
    for root in roots():
        sounds = root if (root / "auth-incorrect.wav").is_file() else root / SOUNDS
        for transcripts in (root / TRANSCRIPTS, Path("/") / TRANSCRIPTS):
            if (sounds / "auth-incorrect.wav").is_file() and transcripts.is_file():
                return sounds, transcripts
    raise DataError(f"the Asterisk English prompts are not installed (looked in {', '.join(map(str, roots()))}); {INSTALL_HINT}")


def clean_transcript(text: str) -> str | None:
    """The spoken words of a transcript line, or None for non-speech entries.

    '[ascending tones]' -> None; 'at [@]' -> 'at'; '(5 seconds of silence)' -> None;
    '... tone. (simple tone sound plays)' -> '... tone.'; 'separated by *' -> 'separated by star'
    (the keypad keys are read aloud as "star" and "pound").
    """
    spoken = re.sub(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>", " ", text)
    spoken = spoken.replace("*", " star ").replace("#", " pound ")
    spoken = re.sub(r"\s+", " ", spoken).strip()
    return spoken if re.search(r"[A-Za-z0-9]", spoken) else None


def load_prompts() -> list[Prompt]:
    sounds, transcripts = locate()
    prompts = []
    with gzip.open(transcripts, "rt", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ":" not in line:
                continue
            name, text = (s.strip() for s in line.split(":", 1))
            path = sounds / f"{name}.wav"
            spoken = clean_transcript(text)
            if spoken is not None and path.is_file() and not name.startswith("silence/"):
                prompts.append(Prompt(name, spoken, path))
    if not prompts:
        raise DataError(f"{transcripts}: no usable prompt; the package looks broken ({INSTALL_HINT})")
    return prompts


def split(prompts: list[Prompt], test_fraction: float = 0.2) -> tuple[list[Prompt], list[Prompt]]:
    """Train/test by prompt: a prompt is in test when a hash of its name falls below ``test_fraction``
    (stable on every machine, independent of the list's order)."""
    def bucket(name: str) -> float:
        return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 16**8

    test = [p for p in prompts if bucket(p.name) < test_fraction]
    train = [p for p in prompts if bucket(p.name) >= test_fraction]
    return train, test


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float32 mono samples at ``sample_rate``, from any rate and channel count soundfile reads."""
    import soundfile as sf
    from scipy.signal import resample_poly

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such audio file")
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise DataError(f"{path}: cannot read the audio ({err}); WAV, FLAC and OGG are supported") from err
    if len(audio) == 0:
        raise DataError(f"{path}: the audio file is empty")
    mono = audio.mean(axis=1)
    if rate != sample_rate:
        g = np.gcd(rate, sample_rate)
        mono = resample_poly(mono, sample_rate // g, rate // g).astype(np.float32)  # polyphase, anti-aliased
    return mono
