"""Shrink the SmolLM2 comparison to the relations whose facts are all scored (the journal is kept)."""
import json, sys
from pathlib import Path
out = Path(sys.argv[1]); keep_n = int(sys.argv[2])
cfg = json.loads((out / "config.json").read_text())
rels = cfg["relations"][:keep_n]
lines = [json.loads(l) for l in (out / "scores.jsonl").read_text().splitlines() if l.strip()]
kept = [r for r in lines if r["relation"] in rels]
assert len(kept) == keep_n * cfg["limit_facts"], (len(kept), rels)
assert sorted(r["fact"] for r in kept) == list(range(len(kept)))
cfg["relations"] = rels
from kneuron.data import load_facts
from kneuron.runs.config import fingerprint, select_facts
cfg["facts_fingerprint"] = fingerprint(select_facts(load_facts(cfg["data"]), rels, cfg["limit_facts"]))
(out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
(out / "scores.jsonl").write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in kept))
print("kept", rels, len(kept))
