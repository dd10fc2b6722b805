"""Put the atp scores and rows of a rerun (`--methods atp`, after the embedding-noise fix) into the
main comparison's journals, so that resuming the main directory writes its tables with them.

The first Gemma 3 run scored atp with noise of 3x the std of the embedding *table*; Gemma scales
the table by sqrt(640) inside its embedding layer, so that noise was 25x too weak.  The other
methods do not depend on atp, and the rerun used the same facts, prompts, halves and seeds, so the
merged journals are what one run with the fixed code would have written.

    python merge_atp.py MAIN_DIR ATP_DIR    # then rerun the same `kneuron compare` on MAIN_DIR
"""

import json
import sys
from pathlib import Path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)


main, atp = Path(sys.argv[1]), Path(sys.argv[2])
fixed = {r["fact"]: r for r in read(atp / "scores.jsonl")}
scores = read(main / "scores.jsonl")
for rec in scores:
    new = fixed[rec["fact"]]
    assert new["prompts"] == rec["prompts"] and new["halves"] == rec["halves"], rec["fact"]
    for key in ("top", "half_top", "seconds"):
        rec[key]["atp"] = new[key]["atp"]
write(main / "scores.jsonl", scores)
rows = {r["row"]: r for r in read(atp / "effects.jsonl")}
effects = [rows.get(r["row"], r) if r["method"] == "atp" else r for r in read(main / "effects.jsonl")]
assert sum(r["method"] == "atp" for r in effects) == len(rows)
write(main / "effects.jsonl", effects)
print(f"merged atp of {len(fixed)} facts and {len(rows)} rows")
