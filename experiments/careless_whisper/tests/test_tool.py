"""The transcribe tool from the command line: clear errors (exit 2, one line), any sample rate and
channel count, and the JSON it promises."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXPERIMENT = __package__.split(".")[1]  # the folder this test lives in: a fork tests itself


REPO_ROOT = Path(__file__).resolve().parents[3]


def transcribe(*args):
    return subprocess.run([sys.executable, "-m", f"experiments.{EXPERIMENT}", "transcribe", *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize(
    "make, args, message",
    [
        (None, ["missing.wav"], "no such"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage"), [], "cannot read"),
        (lambda p: __import__("soundfile").write(p, np.zeros((0, 2), np.float32), 44100), [], "empty"),
        (lambda p: __import__("soundfile").write(p, np.zeros(8000, np.float32), 8000), ["--chunk-ms", "250"], "chunk"),
        (lambda p: __import__("soundfile").write(p, np.zeros(8000, np.float32), 8000), ["--adapter", "nowhere"], "adapter"),
        (lambda p: __import__("soundfile").write(p, np.zeros(8000, np.float32), 8000), ["--beam", "0"], "--beam"),
        (lambda p: __import__("soundfile").write(p, np.zeros(8000, np.float32), 8000), ["--trace", "--beam", "2"], "--trace"),
        # no trained adapter ships for these: refused (the untuned causal model loops), with how to train one
        (lambda p: __import__("soundfile").write(p, np.zeros(8000, np.float32), 8000), ["--chunk-ms", "200"], "streamlab reproduce careless_whisper"),
        (lambda p: __import__("soundfile").write(p, np.zeros(8000, np.float32), 8000), ["--model", "base"], "no streaming adapter for base"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, make, args, message):
    audio = tmp_path / "a.wav"
    if make is not None:
        make(audio)
    out = transcribe(tmp_path / args[0] if args and args[0] == "missing.wav" else audio, *(args[1:] if args and args[0] == "missing.wav" else args))
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_json_on_real_speech_at_44_1_khz_stereo(tmp_path):
    """The shipped 1000 ms adapter on a real prompt resampled to 44.1 kHz stereo: words with
    emission times on the chunk grid, in order, inside the audio (plus the final flush)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    from ..speech import load_audio, load_prompts

    speech = load_audio(next(p for p in load_prompts() if p.name == "vm-goodbye").path)
    stereo = np.stack([resample_poly(speech, 441, 160)] * 2, axis=1).astype(np.float32)
    sf.write(tmp_path / "goodbye.flac", stereo, 44100)
    out = transcribe(tmp_path / "goodbye.flac", "--chunk-ms", "1000", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert abs(result["audio_seconds"] - len(speech) / 16000) < 0.01 and not result["silence_only"]
    assert "goodbye" in result["text"].lower()
    times = [w["emitted_at"] for w in result["words"]]
    assert times == sorted(times) and times[-1] <= result["audio_seconds"]  # the closing flush is at the audio's end
    # decoded 12.5 ms after each 1 s chunk's end (the convolutions' look-ahead), not a chunk later
    assert all(abs(t - 0.0125 - round(t - 0.0125)) < 1e-6 or t == result["audio_seconds"] for t in times)
    assert all(0 <= w["start"] < w["end"] == w["emitted_at"] for w in result["words"])
    # --offline: ordinary Whisper over the whole file, the same JSON; every word known at the end
    offline = transcribe(tmp_path / "goodbye.flac", "--offline", "--json")
    assert offline.returncode == 0, offline.stderr
    whole = json.loads(offline.stdout)
    assert set(whole) == set(result) and "goodbye" in whole["text"].lower()
    assert whole["words"] and {w["emitted_at"] for w in whole["words"]} == {whole["audio_seconds"]}
    refused = transcribe(tmp_path / "goodbye.flac", "--offline", "--adapter", str(tmp_path))
    assert refused.returncode == 2 and "drop --adapter" in refused.stderr


def test_an_adapter_for_another_model_or_chunk_size_is_refused(tmp_path, capsys):
    import json

    from shared.errors import StreamlabError

    from ..tool import check_adapter

    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "careless_whisper.json").write_text(json.dumps({"model": "tiny.en", "chunk_ms": 300}))
    check_adapter(tmp_path, "tiny.en", 300)
    with pytest.raises(StreamlabError, match="trained for Whisper tiny.en, not base"):
        check_adapter(tmp_path, "base", 300)
    with pytest.raises(StreamlabError, match="trained for 300 ms chunks, not 1000: pass --chunk-ms 300"):
        check_adapter(tmp_path, "tiny.en", 1000)  # it used to warn and run
    check_adapter(tmp_path, "tiny.en", 1000, any_chunk=True)
    assert "warning" in capsys.readouterr().err


def test_the_speech_gate_opens_on_speech_and_not_on_silence():
    from ..decode import SPEECH_RMS, heard_speech
    from ..speech import load_audio, load_prompts

    g = np.random.default_rng(0)
    assert not heard_speech(np.zeros(16000, np.float32)) and not heard_speech(np.zeros(1, np.float32))
    assert not heard_speech(np.zeros(0, np.float32))
    assert not heard_speech((g.standard_normal(16000) * SPEECH_RMS / 3).astype(np.float32))  # dither, -70 dBFS
    assert heard_speech((g.standard_normal(16000) * SPEECH_RMS * 3).astype(np.float32))  # -50 dBFS: the model decides
    quiet = 0.01 * load_audio(next(p for p in load_prompts() if p.name == "vm-goodbye").path)  # real speech 40 dB down
    assert heard_speech(quiet.astype(np.float32))


@pytest.mark.parametrize("samples", [16000 * 10, 1])
def test_silence_and_a_one_sample_file_give_no_words(tmp_path, samples):
    """10 s of digital silence used to come out as "you"."""
    import soundfile as sf

    sf.write(tmp_path / "quiet.wav", np.zeros(samples, np.float32), 16000)
    out = transcribe(tmp_path / "quiet.wav", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["text"] == "" and result["words"] == [] and result["silence_only"]


@pytest.fixture(scope="module")
def shipped():
    """tiny.en with the shipped 300 ms adapter, its vocabulary and the chunking."""
    from ..decode import Vocabulary
    from ..encoder import Chunking
    from ..tool import load_adapter
    from ..weights import load_whisper

    base, data_dir = load_whisper("tiny.en")
    return load_adapter(base, "tiny.en", 300), Vocabulary(data_dir), Chunking(300)


def test_shipped_adapters_carry_their_provenance():
    from ..tool import SHIPPED, shipped_adapter

    for chunk_ms in (300, 1000):
        path = shipped_adapter("tiny.en", chunk_ms)
        assert path is not None and path.parent.parent == SHIPPED
        meta = json.loads((path / "careless_whisper.json").read_text())
        assert meta["model"] == "tiny.en" and meta["chunk_ms"] == chunk_ms
        assert {"commit", "command", "data", "wer"} <= set(meta["provenance"])
        assert (path / "adapter_model.safetensors").stat().st_size < 8 * 2**20


def test_word_intervals_hold_the_forced_aligned_word_ends(shipped):
    """Each word's [start, end] is the audio of the chunk that produced it; on real held-out speech
    the pocketsphinx-aligned end of most words lies inside (a word is emitted only once its end has
    been heard, and mostly in the very next chunk)."""
    from ..align import AlignmentError, align
    from ..decode import transcribe_stream
    from ..metrics import interval_hits, word_intervals
    from ..speech import load_audio, load_prompts, split

    model, vocab, chunking = shipped
    hits, lengths = [], []
    for p in [p for p in split(load_prompts())[1] if 2 < len(p.text.split()) < 12][:8]:
        audio = load_audio(p.path)
        try:
            aligned = align(audio, p.text)
        except AlignmentError:
            continue
        t = transcribe_stream(model, vocab, audio, chunking)
        words = word_intervals(vocab.tokenizer, t.tokens, t.emitted_at, t.heard_from, vocab.eot)
        assert all(0 <= s < e <= len(audio) / 16000 for _, s, e in words)  # the flush's words: from the last chunk decoded to the end
        grid = lambda t: t < 1e-9 or abs((t - 0.6) / 0.3 - round((t - 0.6) / 0.3)) < 1e-6  # noqa: E731  (chunk boundaries)
        assert all(grid(s) and (grid(e - 0.0125) or e == len(audio) / 16000) for _, s, e in words)
        hits += interval_hits(words, aligned)
        lengths += [e - s for _, s, e in words]
    assert len(hits) > 30 and np.mean(hits) > 0.6
    assert np.median(lengths) < 0.35  # most words are recognised within one 300 ms chunk


def test_shipping_copies_a_clean_runs_adapter_with_its_provenance(tmp_path):
    from shared.errors import StreamlabError

    from ..ship import ship

    run = tmp_path / "20990101-000000-cpu"
    adapter = run / "adapters" / "300ms" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    (adapter / "careless_whisper.json").write_text(json.dumps({"model": "tiny.en", "chunk_ms": 300, "epochs": 4}))
    (run / "results.csv").write_text("row,metric,value\ncareless_whisper,wer_300ms,6.5\ncareless_whisper,wer_other_300ms,20.0\noffline,wer,4.3\n")
    provenance = {"command": ["streamlab", "reproduce", "careless_whisper"], "date": "2099-01-01", "git": {"dirty": True, "sha": "abc"}}
    (run / "provenance.json").write_text(json.dumps(provenance))
    with pytest.raises(StreamlabError, match="uncommitted"):
        ship(run, [300], tmp_path / "shipped")
    provenance["git"]["dirty"] = False
    (run / "provenance.json").write_text(json.dumps(provenance))
    with pytest.raises(StreamlabError, match="no trained 1000 ms adapter"):
        ship(run, [1000], tmp_path / "shipped")
    (dest,) = ship(run, [300], tmp_path / "shipped")
    assert dest == tmp_path / "shipped" / "tiny.en" / "300ms" and (dest / "adapter_model.safetensors").read_bytes() == b"weights"
    meta = json.loads((dest / "careless_whisper.json").read_text())
    assert meta["chunk_ms"] == 300 and meta["provenance"]["commit"] == "abc" and meta["provenance"]["wer"]["wer"] == 6.5
    assert meta["provenance"]["wer"]["wer_other"] == 20.0 and meta["provenance"]["wer_offline"]["wer"] == 4.3
