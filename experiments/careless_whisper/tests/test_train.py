"""Training details that a wrong implementation gets wrong: speed perturbation keeps the aligned
times consistent with the audio, and the schedule warms up and decays to zero."""

import numpy as np
import pytest

from ..train import change_speed, warmup_cosine

EXPERIMENT = __package__.split(".")[1]  # the folder this test lives in: a fork tests itself


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


def test_trainer_device_reaches_the_model():
    """The paper preset says trainer.device=cuda; it used to be ignored, so the run went on on the
    CPU. Here (no CUDA) asking for cuda must stop at once, before any model is loaded or trained."""
    import torch

    from shared import registry
    from shared.config import compose

    from ..reproduce import reproduce

    if torch.cuda.is_available():
        pytest.skip("CUDA is available: tests/test_gpu.py runs the model there")
    cfg = compose(registry.get(EXPERIMENT), "smoke", ["trainer.device=cuda"])
    with pytest.raises(RuntimeError, match="trainer.device=cuda but CUDA is not available"):
        reproduce(cfg, run=None)


@pytest.mark.gpu
def test_streaming_transcription_and_the_training_loss_on_cuda_equal_the_cpu():
    """Device plumbing of the encoder, both decoders and the chunk loss: the same tokens and the
    same loss on CUDA as on the CPU (random Whisper weights: the weights package may be absent)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from ..decode import Vocabulary, transcribe_stream
    from ..encoder import Chunking
    from ..weights import package_files

    try:
        _, data_dir = package_files("tiny.en")
    except Exception as error:  # the tokenizer ships with the weights package
        pytest.skip(f"tiny.en package not installed here ({error})")
    vocab = Vocabulary(data_dir)
    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=51864, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128)
    cpu_model = WhisperForConditionalGeneration(config).eval()
    gpu_model = WhisperForConditionalGeneration(config).eval()
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model = gpu_model.cuda()
    audio = (0.1 * np.sin(np.linspace(0, 900, 16000 * 2))).astype(np.float32)
    torch.backends.cuda.matmul.allow_tf32 = False
    for beam in (1, 3):
        a = transcribe_stream(cpu_model, vocab, audio, Chunking(300), beam_size=beam, max_new=6)
        b = transcribe_stream(gpu_model, vocab, audio, Chunking(300), beam_size=beam, max_new=6)
        assert a.tokens == b.tokens


def test_encoder_cross_lora_leaves_the_decoders_own_language_model_alone():
    from ..lora import add_lora, lora_parameters
    from ..weights import load_whisper

    model, _ = load_whisper("tiny.en")
    wrapped = add_lora(model, 32, targets="encoder_cross")
    adapted = {n.split(".lora_A")[0] for n, _ in wrapped.named_parameters() if "lora_A" in n}
    assert lora_parameters(wrapped) == 2 * 384 * 32 * (4 * 4 + 4 * 4)  # 4 linears x 4 layers, twice
    assert all(".encoder.layers." in n and ".self_attn." in n or ".decoder.layers." in n and ".encoder_attn." in n for n in adapted)
    assert len(adapted) == 32 and not any(".decoder.layers." in n and ".self_attn." in n for n in adapted)
    with pytest.raises(ValueError, match="encoder_cross"):
        add_lora(load_whisper("tiny.en")[0], 4, targets="decoder")


def test_noise_is_added_at_the_drawn_snr():
    from ..train import add_noise

    g = np.random.default_rng(0)
    speech = (np.sin(np.arange(32000) * 0.05) * 0.3).astype(np.float32)
    for snr in (10.0, 30.0):
        noisy = add_noise(speech, snr, g)
        measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean((noisy - speech).astype(np.float64) ** 2))
        assert noisy.dtype == np.float32 and abs(measured - snr) < 0.2


def test_training_streams_put_prompts_back_to_back_with_their_aligned_times_shifted():
    from ..decode import Vocabulary
    from ..encoder import Chunking
    from ..speech import load_audio, load_prompts
    from ..train import prepare
    from ..weights import package_files

    _, data_dir = package_files("tiny.en")
    vocab = Vocabulary(data_dir)
    prompts = [p for p in load_prompts() if p.name in ("vm-goodbye", "auth-thankyou", "conf-onlyperson")]
    streams = {"count": 2, "max_prompts": 3, "max_seconds": 30, "gap_s": [0.2, 0.2]}
    out = prepare(prompts, vocab, Chunking(300), speeds=[1.0], streams=streams, log=lambda m: None)
    singles, made = out[:-2], [v[0] for v in out[-2:]]
    assert len(singles) == 3 and all(len(v) == 1 for v in out[-2:])
    durations = {p.name: len(load_audio(p.path)) / 16000 for p in prompts}
    for utt in made:
        names = utt.name.split(":", 1)[1].split("+")
        assert 2 <= len(names) <= 3 and len(set(names)) == len(names)
        assert abs(utt.duration - (sum(durations[n] for n in names) + 0.2 * (len(names) - 1))) < 1e-3
        # every word of the stream ends inside it, in order, and the last one near the last prompt's end
        ends = utt.seq.label_end[len(vocab.start) - 1 : -1]
        assert (ends[1:] >= ends[:-1]).all() and float(ends[-1]) <= utt.duration
        assert float(ends[-1]) > utt.duration - durations[names[-1]]
        assert utt.mel.shape[1] >= (utt.duration + 1.0) * 100 - 2  # the 1 s tail is there too


def test_distillation_pulls_the_causal_encoder_toward_the_stock_offline_encoder(tmp_path):
    """``train.distill``: the teacher is the stock encoder (LoRA off) on offline Whisper's features
    of the whole utterance, one output per 20 ms of audio; the loss adds weight x the mean squared
    distance over the frames heard at this chunk end, and only the encoder receives its gradient."""
    import torch

    from ..baselines import features
    from ..decode import Vocabulary
    from ..encoder import Chunking, encode_prefix
    from ..lora import add_lora
    from ..speech import load_prompts
    from ..train import TAIL_SECONDS, candidate_frames, chunk_loss, load_audio, offline_encoder, prepare
    from ..weights import load_whisper

    stock, data_dir = load_whisper("tiny.en")
    model = add_lora(load_whisper("tiny.en")[0], 4)
    with torch.no_grad():  # adapters that change every adapted layer, as after training
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.005 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    prompt = next(p for p in load_prompts() if p.name == "vm-goodbye")
    chunking = Chunking(300)
    utt = prepare([prompt], Vocabulary(data_dir), chunking, teacher=offline_encoder(model), log=lambda m: None)[0][0]
    audio_frames = int(np.ceil((utt.duration + 1.0) * 50))  # the utterance and its 1 s silence tail, 20 ms per frame
    assert utt.teacher.dtype == torch.float16 and abs(len(utt.teacher) - audio_frames) <= 1
    with torch.no_grad():
        padded = np.concatenate([load_audio(prompt.path), np.zeros(int(TAIL_SECONDS * 16000), np.float32)])
        expected = stock.model.encoder(features(padded)).last_hidden_state[0, : len(utt.teacher)]
    torch.testing.assert_close(utt.teacher.float(), expected, atol=2e-2, rtol=1e-2)  # float16 storage

    n = candidate_frames(utt, chunking)[2]
    model.train()
    losses, grads = {}, {}
    for weight in (0.0, 2.5):
        model.zero_grad()
        loss = chunk_loss(model, utt, chunking, n, distill=weight)
        loss.backward()
        losses[weight] = float(loss.detach())
        grads[weight] = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    with torch.no_grad():
        enc = encode_prefix(model.base_model.model.model.encoder, utt.mel[None, :, : 2 * n + 1], n, chunking)[0].double()
        distance = float((enc - utt.teacher[:n].double()).pow(2).mean())
    assert losses[2.5] - losses[0.0] == pytest.approx(2.5 * distance, rel=1e-4)
    assert distance > 0.05  # the causal encoder is not already the offline one: the term has work to do
    for name in grads[0.0]:
        same = torch.equal(grads[0.0][name], grads[2.5][name])
        assert same == (".decoder." in name), name  # the encoder's adapters get the pull, the decoder's do not
    # train.distill reaches the loss through the trainer: without the teacher's outputs it must refuse
    from types import SimpleNamespace

    from ..train import fit_adapter

    plain = prepare([prompt], Vocabulary(data_dir), chunking, log=lambda m: None)
    cfg = SimpleNamespace(lr=1e-4, weight_decay=0.0, eps=1e-6, epochs=1, warmup=1, seed=0, get=lambda key, default=None: 1.0 if key == "distill" else default)
    with pytest.raises(ValueError, match="offline encoder"):
        fit_adapter(model, plain, chunking, cfg, 1.0, tmp_path)
