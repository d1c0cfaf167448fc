import torch, time
from transformers import WhisperFeatureExtractor
from experiments.careless_whisper.weights import load_whisper
from experiments.careless_whisper.encoder import Chunking, encode_prefix, IncrementalEncoder
from experiments.careless_whisper.speech import load_prompts, load_audio
torch.set_num_threads(1)
m, d = load_whisper("tiny.en"); enc = m.model.encoder
p = [x for x in load_prompts() if x.name == "auth-incorrect"][0]
mel = WhisperFeatureExtractor(feature_size=80)(load_audio(p.path), sampling_rate=16000, return_tensors="pt").input_features
with torch.no_grad():
    ref = enc(mel).last_hidden_state
    ours = encode_prefix(enc, torch.nn.functional.pad(mel, (0, 1)), 1500, None)
    print("bidirectional vs HF", (ref - ours).abs().max().item())
    ch = Chunking(300)
    full = encode_prefix(enc, mel, 300, ch)
    inc = IncrementalEncoder(enc, ch); outs = []; times = []
    n = ch.first_frames
    while n <= 300:
        t = time.perf_counter(); outs.append(inc.step(mel[..., : 2 * n + 1], n)); times.append(time.perf_counter() - t); n += ch.g
    inc_all = torch.cat(outs, 1)
    print("incremental vs masked prefix", (inc_all - full[:, : inc_all.shape[1]]).abs().max().item(), inc_all.shape)
    trunc = encode_prefix(enc, mel[..., : 2 * 150 + 1], 150, ch)
    print("truncated prefix vs long", (trunc - full[:, :150]).abs().max().item())
    print("step ms", [round(t * 1e3, 1) for t in times])
with torch.no_grad():
    print("max abs output", full.abs().max().item())
    encd = enc.double(); meld = mel.double()
    full = encode_prefix(encd, meld, 300, ch)
    inc = IncrementalEncoder(encd, ch); outs = []; n = ch.first_frames
    while n <= 300:
        outs.append(inc.step(meld[..., : 2 * n + 1], n)); n += ch.g
    print("float64 incremental vs prefix", (torch.cat(outs, 1) - full[:, :300]).abs().max().item())
