"""Word end times by forced alignment with pocketsphinx (offline; its wheel bundles a US-English
acoustic model and the CMU dictionary): the weak alignment CarelessWhisper's training targets need.

    words = align(audio_16k, "Please press 1 to mute.")   # [Word("Please", 0.02, 0.31), Word("press", ...), Word("1", ...), ...]

Every whitespace word of the transcript keeps its written form (what Whisper must output); its
spoken form for the aligner is lowercased, stripped of punctuation, numerals spelled out
("500" -> "five hundred", "28.8" -> "twenty eight point eight"). A word the dictionary lacks makes
the utterance unalignable: ``AlignmentError`` names it, and the caller skips the utterance.

Alignments are cached on disk (``outputs/cache/align``, keyed by the audio's samples, the spoken
text and pocketsphinx's version; failures too): aligning the 442 training prompts takes about
17 minutes of one core and gives the same answer every time (pocketsphinx normalises each
utterance on its own, so the result does not depend on what was aligned before).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from shared.errors import DataError

SAMPLE_RATE = 16_000
NON_WORDS = {"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "++NOISE++", "++BREATH++"}


class AlignmentError(DataError):
    pass


@dataclass(frozen=True)
class Word:
    text: str  # as written in the transcript
    start: float  # seconds
    end: float


def spoken_form(word: str) -> list[str]:
    """The dictionary words a written word is read as."""
    from num2words import num2words

    out = []
    for piece in re.findall(r"\d+(?:\.\d+)?|[A-Za-z']+", word):
        if piece[0].isdigit():
            out += re.findall(r"[a-z]+", num2words(float(piece) if "." in piece else int(piece)).lower())
        else:
            out.append(piece.lower().strip("'"))
    return [w for w in out if w]


_decoder = None


def _get_decoder():
    global _decoder
    if _decoder is None:
        from pocketsphinx import Decoder

        _decoder = Decoder(samprate=SAMPLE_RATE, bestpath=False, loglevel="FATAL")
    return _decoder


def align(audio: np.ndarray, transcript: str, cache: bool = True) -> list[Word]:
    """Start and end time (s) of every written word of ``transcript`` in ``audio`` (16 kHz float32);
    ``cache=False`` always runs the aligner (and writes nothing)."""
    if not cache:
        return _align(audio, transcript)
    import hashlib
    import json
    from importlib.metadata import version

    from shared.io import atomic_write_json
    from shared.paths import outputs_root

    pcm = np.ascontiguousarray(audio, dtype=np.float32).tobytes()
    key = hashlib.sha256(pcm + transcript.encode() + version("pocketsphinx").encode()).hexdigest()[:32]
    path = outputs_root() / "cache" / "align" / f"{key}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if "error" in saved:
            raise AlignmentError(saved["error"])
        return [Word(*w) for w in saved["words"]]
    try:
        words = _align(audio, transcript)
    except AlignmentError as err:
        atomic_write_json(path, {"error": str(err)})
        raise
    atomic_write_json(path, {"words": [[w.text, w.start, w.end] for w in words]})
    return words


def _align(audio: np.ndarray, transcript: str) -> list[Word]:
    decoder = _get_decoder()
    written = transcript.split()
    spoken = [spoken_form(w) for w in written]
    missing = sorted({s for forms in spoken for s in forms if decoder.lookup_word(s) is None})
    if missing:
        raise AlignmentError(f"not in the aligner's dictionary: {', '.join(missing)}")
    flat = [s for forms in spoken for s in forms]
    if not flat:
        raise AlignmentError(f"nothing to align in {transcript!r}")
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    try:
        decoder.set_align_text(" ".join(flat))
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
    except RuntimeError as err:
        raise AlignmentError(f"pocketsphinx could not align {transcript[:60]!r}: {err}") from err
    rate = decoder.config["frate"]
    found = decoder.seg()
    if found is None:  # no path through the audio matches the text
        raise AlignmentError(f"pocketsphinx found no alignment of {transcript[:60]!r} to the audio")
    segments = [(re.sub(r"\(\d+\)$", "", s.word), s.start_frame / rate, (s.end_frame + 1) / rate) for s in found if s.word not in NON_WORDS]
    if [s[0] for s in segments] != flat:
        raise AlignmentError(f"alignment of {transcript[:60]!r} did not cover every word ({len(segments)} of {len(flat)})")
    words, at = [], 0
    for text, forms in zip(written, spoken):
        if not forms:  # pure punctuation: zero-length, at the previous word's end
            t = words[-1].end if words else 0.0
            words.append(Word(text, t, t))
            continue
        span = segments[at : at + len(forms)]
        at += len(forms)
        words.append(Word(text, span[0][1], span[-1][2]))
    return words


def align_or_none(audio: np.ndarray, transcript: str) -> list[Word] | None:
    """``align``, or None where the aligner cannot align the transcript: such a file still counts
    in WER and is left out of the lags only."""
    try:
        return align(audio, transcript)
    except AlignmentError:
        return None
