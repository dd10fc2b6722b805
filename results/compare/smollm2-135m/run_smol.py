import sys, time, torch, kneuron
from kneuron.data import load_facts
from kneuron.compare import CompareConfig, compare
torch.set_num_threads(1)
import os
rels = os.environ.get("RELS", "P19,P27,P30,P36,P101,P176,P364,P495").split(",")
kn = kneuron.load("/tmp/real/smollm2-135m", device="cpu")
facts = load_facts("/tmp/cmp/smol_sample.jsonl")
cfg = CompareConfig(model="/tmp/real/smollm2-135m", data="/tmp/cmp/smol_sample.jsonl", relations=rels,
                    limit_facts=2, prompts_per_fact=3, budgets=[2, 8, 32], other_prompts=5, seed=0)
t = time.time()
res = compare(kn, facts, sys.argv[1], cfg, progress=lambda s: print(f"[{time.time()-t:7.1f}s] {s}", flush=True))
print(res.methods.to_string())
