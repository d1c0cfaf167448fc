import sys, time, torch, numpy as np, jiwer
from transformers import WhisperFeatureExtractor
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
from experiments.careless_whisper.weights import load_whisper
from experiments.careless_whisper.speech import load_prompts, load_audio, split
from experiments.careless_whisper.decode import Vocabulary, transcribe_stream
from experiments.careless_whisper.encoder import Chunking
torch.set_num_threads(1)
m, d = load_whisper("tiny.en"); vocab = Vocabulary(d)
norm = EnglishTextNormalizer({})
_, test = split(load_prompts())
test = test[: int(sys.argv[1])]
fe = WhisperFeatureExtractor(feature_size=80)
refs, off, cau = [], [], []
t_off = t_cau = 0
for p in test:
    a = load_audio(p.path)
    refs.append(norm(p.text))
    t = time.time()
    f = fe(a, sampling_rate=16000, return_tensors="pt").input_features
    ids = m.generate(f, max_new_tokens=120)
    off.append(norm(vocab.decode(ids[0].tolist()))); t_off += time.time() - t
    t = time.time()
    tr = transcribe_stream(m, vocab, a, Chunking(300)); cau.append(norm(tr.text)); t_cau += time.time() - t
pairs = [(r, o, c) for r, o, c in zip(refs, off, cau) if r]
print("n", len(pairs), "offline WER", jiwer.wer([p[0] for p in pairs], [p[1] for p in pairs]), "causal-untuned WER", jiwer.wer([p[0] for p in pairs], [p[2] for p in pairs] ), f"time off {t_off:.0f}s causal {t_cau:.0f}s audio {sum(len(load_audio(p.path)) for p in test)/16000:.0f}s")
for r, o, c in pairs[:12]: print(repr(r), "|", repr(o), "|", repr(c))
