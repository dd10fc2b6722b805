"""`kneuron reproduce` and `kneuron experiment` end to end on a tiny fact world, and the report in Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from kneuron.cli import main

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def world(tiny_world):
    return tiny_world


@pytest.fixture(scope="module")
def repro(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "out"
    rc = main(["reproduce", "--model", str(world), "--data", str(world), "--out", str(out), "--no-progress",
               "--max-tries", "50", "--seed", "7"])
    assert rc == 0
    return out


def test_reproduce_writes_everything(repro, world):
    for name in ("report.html", "report.md", "config.json", "run/neurons.parquet"):
        assert (repro / name).is_file(), name
    config = json.loads((repro / "config.json").read_text())
    assert config["seed"] == 7 and config["settings"]["seed"] == 7 and config["model"] == str(world)
    assert config["settings"]["lambda2"] == 8.0 and config["settings"]["share"] == 0.1
    assert config["skipped"] == {} and config["timings"]["total_s"] > 0
    tables = {p.stem for p in (repro / "tables").glob("*.csv")}
    assert {"comparison_with_paper", "table2_statistics", "suppression_means", "table4_prompt_types",
            "table3_trigger_sentences", "table6_updating", "table5_erasing", "provenance"} <= tables
    figures = {p.stem for p in (repro / "figures").glob("*.png")}
    assert {"figure3_layers", "figure4_suppress", "figure5_amplify", "figure_prompt_types", "figure_updating",
            "figure_erasing"} <= figures
    for png in (repro / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    comp = pd.read_csv(repro / "tables" / "comparison_with_paper.csv").set_index("quantity")
    assert comp.loc["neurons per fact", "paper_kn"] == 4.13 and comp.loc["change rate ↑", "paper_control"] == 4.7
    assert not pd.isna(comp.loc["neurons per fact", "ours_kn"])
    assert not pd.isna(comp.loc["mean activation, T1 (head and tail)", "ours_control"])
    md = (repro / "report.md").read_text()
    assert f"**{world}** on **{world}**" in md and "bert-base-cased" in md
    for t in tables:
        assert f"tables/{t}.csv" in md
    for f in figures:
        assert f"figures/{f}.png" in md


def test_experiment_reuses_the_run(repro, tmp_path, monkeypatch):
    from kneuron.knowledge_model import KnowledgeModel

    def no_attribution(*a, **k):
        raise AssertionError("attributions must not be recomputed")

    monkeypatch.setattr(KnowledgeModel, "attribute", no_attribution)
    before = (repro / "run" / "attributions.jsonl").stat().st_mtime_ns
    out = tmp_path / "stats"
    assert main(["experiment", "statistics", str(repro / "run"), "--out", str(out), "--seed", "7"]) == 0
    assert (repro / "run" / "attributions.jsonl").stat().st_mtime_ns == before
    assert json.loads((out / "config.json").read_text())["seed"] == 7
    ours = pd.read_csv(out / "tables" / "table2_statistics.csv")
    full = pd.read_csv(repro / "tables" / "table2_statistics.csv")
    pd.testing.assert_frame_equal(ours, full)  # same run, same seed, same numbers
    assert main(["experiment", "erase", str(repro / "run"), "--out", str(tmp_path / "erase"),
                 "--erase-relations", "W3", "--replacement", "unk"]) == 0
    erase = pd.read_csv(tmp_path / "erase" / "tables" / "table5_erasing.csv")
    assert set(erase["relation"]) == {"W3"}


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["experiment", "nonsense", str(tmp_path)]) == 2
    assert "unknown experiment 'nonsense'" in capsys.readouterr().err
    assert main(["experiment", "statistics", str(tmp_path)]) == 2
    assert "not a finished discovery run" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_opens_in_chromium(repro, tmp_path):
    """Every figure decodes and every table is in the DOM of the self-contained report.html."""
    html = (repro / "report.html").read_text()
    assert 'src="figures/' not in html and "data:image/png;base64," in html  # self-contained
    probe = """<script>
window.addEventListener('load', () => {
  const out = document.createElement('pre'); out.id = 'probe';
  const imgs = [...document.images].map(i => [i.id, i.complete && i.naturalWidth > 0, i.naturalWidth]);
  const tables = [...document.querySelectorAll('table')].map(t => [t.id, t.tBodies[0].rows.length]);
  out.textContent = JSON.stringify({imgs, tables});
  document.body.appendChild(out);
});
</script>"""
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", probe + "</body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert m, f"probe did not run; chromium printed: {dom[:500]}"
    result = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    figures = sorted(p.stem for p in (repro / "figures").glob("*.png"))
    imgs = {name: (ok, width) for name, ok, width in result["imgs"]}
    assert sorted(n[len("figure-"):] for n in imgs) == figures
    assert all(ok and width > 100 for ok, width in imgs.values()), imgs
    tables = dict(result["tables"])
    for csv in (repro / "tables").glob("*.csv"):
        assert f"table-{csv.stem}" in tables, csv.stem
        assert tables[f"table-{csv.stem}"] == len(pd.read_csv(csv)), csv.stem
