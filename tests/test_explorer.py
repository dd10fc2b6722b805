"""`kneuron explore`: the page is built from a tiny-world run and checked in a real browser (Chromium).

Everything shown is compared with the run's own tables (neurons.parquet, attributions.jsonl) and
with an independent recomputation for the model part (vocabulary projection, activations).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import kneuron
from kneuron.cli import main
from kneuron.explorer.data import EXTRA
from kneuron.runs.rundir import RunDir

SHOTS = os.environ.get("KNEURON_EXPLORER_SHOTS")  # folder to save screenshots into (docs/ for the README)


@pytest.fixture(scope="module")
def run(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("explore") / "run"
    assert main(["discover", "--model", str(tiny_world), "--data", str(tiny_world), "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    return out


@pytest.fixture(scope="module")
def page(run, tiny_world):
    path = run.parent / "explorer.html"
    assert main(["explore", str(run), "--out", str(path), "--model", str(tiny_world)]) == 0
    return path


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no system Chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    exe = _chromium()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


def _shot(pg, name):
    if SHOTS:
        pg.screenshot(path=str(Path(SHOTS) / f"explorer-{name}.png"))


def test_model_part_is_cached_and_matches_a_direct_computation(run, page, tiny_world):
    rd = RunDir(run)
    cached = rd.read_json(EXTRA)
    kn = kneuron.load(str(tiny_world), device="cpu")
    table = rd.neurons()
    names = {f"L{a}.{b}" for a, b in zip(table["layer"], table["index"])}
    assert set(cached["neurons"]) == names
    name = sorted(names)[0]
    layer, index = (int(x) for x in name[1:].split("."))
    slot = kn.adapter.value_slots(kn.model, layer).detach()[:, index]
    logits = kn.model.get_output_embeddings().weight.detach() @ slot
    top = [kn.tokenizer.decode([int(t)]) for t in torch.topk(logits, 20).indices]
    assert [t for t, _ in cached["neurons"][name]["vocab"]["top"]] == top
    # the top text's per-token activations are the model's (recomputed here, prompt by prompt)
    from kneuron.experiments.rundata import RunData
    from kneuron.models.replay import read_activations

    entry = cached["neurons"][name]
    ranked = [it["max"] for it in entry["top"]]
    assert ranked == sorted(ranked, reverse=True) and ranked[-1] >= max(it["max"] for it in entry["bottom"])
    item = next(it for it in entry["top"] if it["source"].startswith("fact/"))
    assert max(item["acts"][1:]) == pytest.approx(item["max"], abs=1e-4)  # ranked after the first token
    fact = RunData.load(run).facts.facts[int(item["source"].split("/")[1])]
    recomputed = []
    for prompt in fact.prompts:
        ids = torch.tensor([kn.encode(prompt).ids])
        recomputed.append(read_activations(kn.model, kn.adapter, ids)[0][0, layer, :, index].tolist())
    assert any(len(r) == len(item["acts"]) and r == pytest.approx(item["acts"], abs=1e-3) for r in recomputed)
    # a second build reuses the cache (same model): same page, the extra is not rewritten
    mtime = (run / "extras" / f"{EXTRA}.json").stat().st_mtime_ns
    again = run.parent / "again.html"
    assert main(["explore", str(run), "--out", str(again)]) == 0
    assert again.read_text() == page.read_text()
    assert (run / "extras" / f"{EXTRA}.json").stat().st_mtime_ns == mtime


def test_full_maps_are_the_runs_own_scores(run, page):
    """The cached layer x neuron maps recomputed for the heatmaps give back every prompt's stored
    coarse set and its scores (discovery kept only those), and the PNG pooling keeps the strongest."""
    from kneuron.explorer.data import SCORES
    from kneuron.explorer.page import map_png
    from kneuron.selection import coarse_neurons

    rd = RunDir(run)
    arrays = rd.read_arrays(SCORES)
    config = rd.config()
    checked = 0
    for fact, record in rd.records().items():
        if "skipped" in record:
            continue
        maps = torch.from_numpy(arrays[f"fact_{fact}"].astype("float32") * arrays[f"scale_{fact}"][:, None, None])
        assert maps.shape[0] == len(record["kn"])
        for k, stored in enumerate(record["kn"]):
            found = {(n.layer, n.index) for n in coarse_neurons(maps[k], config.threshold)}
            stored_set = {(a, b) for a, b, _ in stored}
            cut = config.threshold * float(maps[k].max())
            border = {tuple(int(v) for v in c) for c in torch.nonzero((maps[k] - cut).abs() <= 0.01 * abs(cut))}
            assert found and (found ^ stored_set) <= border  # fp16 rounding may only move cells at the threshold
            for a, b, score in stored:
                assert float(maps[k][a, b]) == pytest.approx(score, rel=3e-3)
            checked += 1
    assert checked > 0
    # pooling keeps the largest |score| of each group of neurons
    x = np.zeros((2, 2000), dtype=np.float32)
    x[0, 5], x[1, 1999] = -3.0, 1.0
    _, vmax, pool = map_png(x)
    assert pool == 3 and vmax == 3.0


def test_click_through_search_links_and_fragment(page, run, browser):
    table = RunDir(run).neurons()
    kn_rows = table[table["method"] == "kn"]
    rel = sorted(set(kn_rows["relation"]))[0]
    row = kn_rows[kn_rows["relation"] == rel].iloc[0]
    fact, subject, obj = int(row["fact"]), row["subject"], row["object"]
    own = [f"L{a}.{b}" for a, b in zip(kn_rows[kn_rows["fact"] == fact]["layer"], kn_rows[kn_rows["fact"] == fact]["index"])]
    records = RunDir(run).records()
    pg = browser.new_page(viewport={"width": 1000, "height": 700})
    pg.goto(page.as_uri())
    # relations table: one row per relation with the run's facts count
    rows = pg.locator("table.relations tbody tr")
    relations = RunDir(run).relations()
    assert rows.count() == len(relations)
    _shot(pg, "relations")
    pg.click(f"table.relations a.rel:text-is('{rel}')")
    assert pg.evaluate("location.hash") == f"#relation/{rel}"
    assert pg.locator("table.facts tbody tr").count() == int((table.drop_duplicates("fact")["relation"] == rel).sum())
    pg.click(f"table.facts a.fact:text-is('{subject}')")
    assert pg.evaluate("location.hash") == f"#fact/{fact}"
    from playwright.sync_api import expect

    expect(pg.locator("h2")).to_contain_text(f"{subject} → {obj}")  # waits for the view to render
    # prompts with their gold probabilities from attributions.jsonl
    probs = records[fact]["prob"]
    cells = pg.locator("table.prompts tbody tr td:nth-child(3)").all_inner_texts()
    assert cells == [f"{p:.3g}" for p in probs]
    shown = pg.locator("table.kn tbody tr td:first-child").all_inner_texts()
    assert shown == own
    assert pg.locator("svg.heat").count() == 1 + len(probs)
    assert pg.locator("figure.fullmap img").count() == 1 + len(probs)  # every neuron, mean and per prompt
    assert pg.locator("figure.fullmap img").first.evaluate("i => i.complete && i.naturalWidth > 0")
    _shot(pg, "fact")
    pg.click(f"table.kn a.neuron:text-is('{own[0]}')")
    assert pg.evaluate("location.hash") == f"#neuron/{own[0]}"
    expect(pg.locator("h2")).to_have_text(f"Neuron {own[0]}")
    assert pg.locator("table.vocab tbody tr").count() == 20
    assert pg.locator("table.sents.top .tok").count() > 0
    assert pg.locator("svg.hist").count() == 1
    _shot(pg, "neuron")
    # the neuron's facts are exactly those whose refined set holds it
    holders = kn_rows[(kn_rows["layer"] == int(own[0][1:].split(".")[0])) & (kn_rows["index"] == int(own[0].split(".")[1]))]
    assert pg.locator(".owners a").count() == len(holders)
    pg.go_back()
    assert pg.evaluate("location.hash") == f"#fact/{fact}"
    from playwright.sync_api import expect

    expect(pg.locator("h2")).to_contain_text(f"{subject} → {obj}")  # waits for the view to render
    # from a neuron to a fact by a link
    pg.goto(page.as_uri() + f"#neuron/{own[0]}")
    pg.locator(".owners a").first.click()
    assert pg.evaluate("location.hash").startswith("#fact/")
    assert int(pg.evaluate("location.hash").split("/")[1]) in set(holders["fact"].astype(int))
    # search by subject and by neuron name
    pg.fill("#q", subject)
    pg.click("#search button")
    assert subject in pg.locator("#results").inner_text()
    _shot(pg, "search")
    pg.fill("#q", own[0])
    pg.press("#q", "Enter")
    pg.locator(f"#results a:text-is('{own[0]}')").click()
    expect(pg.locator("h2")).to_have_text(f"Neuron {own[0]}")
    # reload with a fragment keeps the view
    pg.goto(page.as_uri() + f"#fact/{fact}")
    pg.reload()
    from playwright.sync_api import expect

    expect(pg.locator("h2")).to_contain_text(f"{subject} → {obj}")  # waits for the view to render
    # the page makes no network request: everything is inlined
    requests = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.reload()
    assert all(u.startswith("file:") for u in requests)
    pg.close()


def test_bad_input_gets_one_line(tmp_path, run, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["explore", str(empty)]) == 2
    assert "is not a discovery run" in capsys.readouterr().err
    old = tmp_path / "old"
    shutil.copytree(run, old)
    import pandas as pd

    pd.read_parquet(old / "neurons.parquet").drop(columns=["method"]).to_parquet(old / "neurons.parquet")
    assert main(["explore", str(old)]) == 2
    assert "older format" in capsys.readouterr().err
    nomodel = tmp_path / "nomodel"
    shutil.copytree(run, nomodel, ignore=shutil.ignore_patterns("extras"))
    assert main(["explore", str(nomodel), "--model", str(tmp_path / "no-such-model")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot load the run's model" in errors[0]
    assert main(["explore", str(run), "--out", str(tmp_path / "missing" / "x.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["explore", str(run), "--out", str(tmp_path / "x.html"), "--heatmaps", "some"]) == 2
    assert "heatmaps must be one of auto, full, coarse, got 'some'" in capsys.readouterr().err


def test_large_run_splits_views_into_chunks_loaded_on_demand(page, run, tmp_path, browser, tiny_world):
    """Past --max-page-mb, fact and neuron views move to OUT_files/chunk-K.js and load when a
    fragment names them; every view shows exactly what the one-file page shows."""
    out = tmp_path / "chunked.html"
    assert main(["explore", str(run), "--out", str(out), "--model", str(tiny_world), "--max-page-mb", "0.02"]) == 0
    chunks = sorted((tmp_path / "chunked_files").glob("chunk-*.js"))
    assert len(chunks) >= 3
    assert out.stat().st_size < page.stat().st_size
    table = RunDir(run).neurons()
    kn_rows = table[table["method"] == "kn"]
    frags = ["relations", f"fact/{int(kn_rows.iloc[0]['fact'])}", f"fact/{int(kn_rows.iloc[-1]['fact'])}",
             f"neuron/L{kn_rows.iloc[0]['layer']}.{kn_rows.iloc[0]['index']}",
             f"neuron/L{kn_rows.iloc[-1]['layer']}.{kn_rows.iloc[-1]['index']}"]
    one, split = browser.new_page(), browser.new_page()
    requests = []
    split.on("request", lambda r: requests.append(r.url))
    for frag in frags:
        one.goto(page.as_uri() + "#" + frag)
        split.goto(out.as_uri() + "#" + frag)
        split.wait_for_function("!document.querySelector('#view .loading')")
        assert split.inner_html("#view") == one.inner_html("#view"), frag
    assert any("chunked_files/chunk-" in u for u in requests)
    assert all(u.startswith("file:") for u in requests)
    # navigating by link inside the split page reaches a chunked view too
    split.goto(out.as_uri() + "#relations")
    split.locator("table.relations a.rel").first.click()
    split.locator("table.facts a.fact").first.click()
    split.wait_for_function("!document.querySelector('#view .loading')")
    assert "→" in split.locator("h2").inner_text()
    one.close()
    split.close()
    # a rebuild that fits in one page removes the chunk folder
    assert main(["explore", str(run), "--out", str(out), "--model", str(tiny_world)]) == 0
    assert not (tmp_path / "chunked_files").exists()
