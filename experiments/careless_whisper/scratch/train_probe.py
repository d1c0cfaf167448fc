import time, torch, numpy as np, jiwer, sys
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
from experiments.careless_whisper.weights import load_whisper
from experiments.careless_whisper.speech import load_prompts, load_audio, split
from experiments.careless_whisper.decode import Vocabulary, transcribe_stream
from experiments.careless_whisper.encoder import Chunking
from experiments.careless_whisper.lora import add_lora
from experiments.careless_whisper.train import prepare, train_epoch
torch.set_num_threads(2); torch.manual_seed(0)
m, d = load_whisper("tiny.en"); vocab = Vocabulary(d); ch = Chunking(300)
train, test = split(load_prompts())
t = time.time(); utts = prepare(train, vocab, ch); print("prepared", len(utts), f"{time.time()-t:.0f}s", flush=True)
model = add_lora(m, 32)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=float(sys.argv[1]), weight_decay=0.01, eps=1e-6)
rng = np.random.default_rng(3407)
norm = EnglishTextNormalizer({})
test = test[: int(sys.argv[3]) if len(sys.argv) > 3 else 20]
every = int(sys.argv[4]) if len(sys.argv) > 4 else 1
for epoch in range(int(sys.argv[2])):
    t = time.time(); losses = train_epoch(model, opt, utts, ch, 0.25, rng)
    print(f"epoch {epoch}: {len(losses)} steps, loss {np.mean(losses[:50]):.3f} -> {np.mean(losses[-50:]):.3f}, {time.time()-t:.0f}s", flush=True)
    if (epoch + 1) % every:
        continue
    model.save_pretrained(f"/work/main/outputs/careless_whisper_probe/adapter_epoch{epoch + 1}")
    refs, hyps = [], []
    t = time.time()
    for p in test:
        a = load_audio(p.path); refs.append(norm(p.text)); hyps.append(norm(transcribe_stream(model, vocab, a, ch).text))
    print("test WER", jiwer.wer(refs, hyps), f"{time.time()-t:.0f}s", flush=True)
    for r, h in list(zip(refs, hyps))[:4]: print("  ", repr(r), "|", repr(h))
