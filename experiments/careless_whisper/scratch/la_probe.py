import time, torch, numpy as np
from experiments.careless_whisper.weights import load_whisper
from experiments.careless_whisper.speech import load_prompts, load_audio, split
from experiments.careless_whisper.decode import Vocabulary
from experiments.careless_whisper.baselines import offline, local_agreement
from experiments.careless_whisper.metrics import wer
torch.set_num_threads(1)
m, d = load_whisper("tiny.en"); vocab = Vocabulary(d)
_, test = split(load_prompts()); test = test[:8]
refs, off, la = [], [], []
t = time.time()
for p in test:
    a = load_audio(p.path); refs.append(p.text); off.append(offline(m, vocab, a).text)
print("offline", wer(refs, off), f"{time.time()-t:.0f}s", flush=True)
t = time.time()
for p in test:
    la.append(local_agreement(m, vocab, load_audio(p.path), 1000).text)
print("LA2 1000ms", wer(refs, la), f"{time.time()-t:.0f}s", sum(len(load_audio(p.path)) for p in test)/16000, "s audio")
for r, x in zip(refs, la): print(repr(r[:80]), "|", repr(x[:80]))
