"""Times the original study's PyTorch code (its mamba2mini.py, not part of this repository) the way the
study ran it, on prompts and weights that bench/original_bench.ts sends, so that both sides of the
comparison run the same token ids on the same checkpoint, one after the other, in one run.

usage: python3 bench/original_driver.py ORIGINAL_DIR MODEL_DIR THREADS
  ORIGINAL_DIR  the folder holding the original code (seedref/mamba2mini.py and its seedref/einops)
  MODEL_DIR     config.json + model.safetensors (F32, state-spaces names), e.g. the synthetic
                checkpoint the bench writes
Reads one JSON request per line on stdin, answers one JSON line on stdout:
  {"op": "construct", "prompts": [[ids...]...], "targets": [id...]}
      per prompt one forward in scan mode and one in attention mode, batch 1, as 01 did;
      answers {"s": seconds, "p_scan": [...], "p_attention": [...]} (p of the target, last position)
  {"op": "sweep", "prompts": [{"ids": [...], "subject": [...]}...], "k": 9}
      per prompt, the seed's three blocks into the last position (last, subject, the rest) in every
      window of k layers: one full attention-mode forward each, batch 1; answers {"s", "knockouts"}
  {"op": "heatmap", "prompts": [[ids...]...], "k": 5}
      per prompt, for every position j and window of k layers, the edge j -> last blocked: one full
      attention-mode forward each; answers {"s", "knockouts"}
Before every forward chunk_size is set to the prompt's length, as the study's generate_single does.
"""
import json
import os
import struct
import sys
import time

ORIGINAL, MODEL, THREADS = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, os.path.join(ORIGINAL, "seedref"))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mamba2mini import Mamba2Config, Mamba2LMHeadModel  # noqa: E402

torch.set_grad_enabled(False)
torch.set_num_threads(THREADS)
cfg = json.load(open(os.path.join(MODEL, "config.json")))
args = Mamba2Config(d_model=cfg["d_model"], n_layer=cfg["n_layer"], vocab_size=cfg["vocab_size"],
                    pad_vocab_size_multiple=cfg.get("pad_vocab_size_multiple", 16))
VOCAB = cfg["vocab_size"]
model = Mamba2LMHeadModel(args)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {t['dtype']}; the driver reads F32 checkpoints")
        a, b = t["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(t["shape"])
    return out


sd = read_safetensors(os.path.join(MODEL, "model.safetensors"))
sd.setdefault("lm_head.weight", sd["backbone.embedding.weight"])  # tied
model.load_state_dict(sd, strict=True)
model.eval()


def last_probs(ids, attention, masks=None):
    args.chunk_size = len(ids)
    logits, _ = model(torch.tensor([ids]), None, attention=attention, num_to_masks=masks)
    return F.softmax(logits[0, -1, :VOCAB], dim=-1)


def construct(req):
    p_scan, p_att = [], []
    t0 = time.perf_counter()
    for ids, target in zip(req["prompts"], req["targets"]):
        p_scan.append(float(last_probs(ids, False)[target]))
        p_att.append(float(last_probs(ids, True)[target]))
    return {"s": time.perf_counter() - t0, "p_scan": p_scan, "p_attention": p_att}


def windows(k):
    return [list(range(i, i + k)) for i in range(0, args.n_layer - k + 1)]


def sweep(req):
    n = 0
    t0 = time.perf_counter()
    for p in req["prompts"]:
        ids, subject = p["ids"], p["subject"]
        last = len(ids) - 1
        for blocked in ([last], subject, [i for i in range(last + 1) if i not in subject]):
            for w in windows(req["k"]):
                last_probs(ids, True, {layer: [(last, j) for j in blocked] for layer in w})
                n += 1
    return {"s": time.perf_counter() - t0, "knockouts": n}


def heatmap(req):
    n = 0
    t0 = time.perf_counter()
    for ids in req["prompts"]:
        last = len(ids) - 1
        for j in range(len(ids)):
            for w in windows(req["k"]):
                last_probs(ids, True, {layer: [(last, j)] for layer in w})
                n += 1
    return {"s": time.perf_counter() - t0, "knockouts": n}


# the machine's BLAS must be a real one (OpenBLAS, MKL): the reference BLAS would make the original look slow
a, b = torch.randn(512, 768), torch.randn(768, 3352)
a @ b
t = time.perf_counter()
for _ in range(5):
    a @ b
gflops = 2 * 512 * 768 * 3352 * 5 / (time.perf_counter() - t) / 1e9
last_probs([1, 2, 3], True)  # warm-up
print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(), "sgemm_gflops": gflops}), flush=True)

OPS = {"construct": construct, "sweep": sweep, "heatmap": heatmap}
for line in sys.stdin:
    if not line.strip():
        continue
    req = json.loads(line)
    print(json.dumps(OPS[req["op"]](req)), flush=True)
