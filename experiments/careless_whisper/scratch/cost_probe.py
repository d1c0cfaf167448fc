"""Per-chunk compute over the 73 s demo-instruct prompt (300 ms chunks), with an adapter: encoder
ms and decoder ms per chunk, averaged per 10 s of audio, and the real-time factor."""
import sys, time, torch, numpy as np
from peft import PeftModel
from experiments.careless_whisper.weights import load_whisper
from experiments.careless_whisper.speech import load_prompts, load_audio
from experiments.careless_whisper.decode import Vocabulary, StreamingTranscriber
from experiments.careless_whisper.encoder import Chunking
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
m, d = load_whisper("tiny.en"); m = PeftModel.from_pretrained(m, sys.argv[1]).eval(); vocab = Vocabulary(d)
p = [x for x in load_prompts() if x.name == "demo-instruct"][0]; a = load_audio(p.path)
s = StreamingTranscriber(m, vocab, Chunking(300)); times = []
t0 = time.perf_counter()
with torch.inference_mode():
    for i in range(0, len(a), 4800):
        s.push(a[i : i + 4800]); times.append(s.mel.seconds)
    r = s.finish()
total = time.perf_counter() - t0
enc, dec = np.array(r.encoder_seconds) * 1e3, np.array(r.decoder_seconds) * 1e3
n = len(enc); per = max(1, n // 7)
print(f"{len(a)/16000:.1f} s audio, {n} chunks, RTF {total / (len(a)/16000):.3f} ({torch.get_num_threads()} threads)")
for k in range(0, n, per):
    print(f"  chunks {k:3d}-{min(n, k+per)-1:3d}: encoder {enc[k:k+per].mean():5.1f} ms, decoder {dec[k:k+per].mean():6.1f} ms")
print(r.text[:300])
