"""The explorer page: every view pre-rendered in Python (HTML + SVG), JavaScript only navigates.

The page is one file: a JSON object {fragment: view HTML} and a search index inlined in a
<script type="application/json">, plus ~50 lines of JavaScript that show the view named by the
URL fragment (#relations, #relation/R, #fact/N, #neuron/L3.71, #search/TEXT).

A run whose views exceed `max_page_bytes` (PARAREL-sized) keeps the relation views and the search
index in the page and moves the fact and neuron views into `PAGE_files/chunk-K.js` beside it: each
chunk is a script that hands its views to the page, added with a <script> element when a fragment
names one of its views, so it works from file:// with no server and loads only what is looked at.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np

from kneuron.errors import KneuronError
from kneuron.explorer.data import explorer_data

e = html.escape


def _link(frag: str, text: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<a href="#{e(frag, quote=True)}"{c}>{e(text)}</a>'


def _nlink(name: str) -> str:
    return _link(f"neuron/{name}", name, "neuron")


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def _color(value: float, vmax: float) -> str:
    """Red for positive, blue for negative, white at zero (scaled by vmax)."""
    t = 0.0 if vmax <= 0 else max(-1.0, min(1.0, value / vmax))
    if t >= 0:
        g = int(255 * (1 - t))
        return f"rgb(255,{g},{g})"
    g = int(255 * (1 + t))
    return f"rgb({g},{g},255)"


def heatmap_svg(scores: dict[tuple[int, int], float], layers: int, columns: list[tuple[int, int]], title: str) -> str:
    """Layer (rows) x neuron (columns) heatmap; a cell is filled only where the neuron lies in that layer."""
    if not columns:
        return "<p>(no neurons)</p>"
    cw, ch, left, top = 14, 14, 36, 18
    width, height = max(left + cw * len(columns) + 10, 420), top + ch * layers + 40
    vmax = max([abs(v) for v in scores.values()] or [1.0])
    out = [f'<svg class="heat" width="{width}" height="{height}" role="img"><title>{e(title)}</title>']
    for row in range(layers):
        out.append(f'<text x="{left - 4}" y="{top + ch * row + 11}" text-anchor="end" font-size="9">L{row}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{cw * len(columns)}" height="{ch * layers}" fill="#f4f4f4"/>')
    for c, (layer, index) in enumerate(columns):
        x = left + cw * c  # one cell per column, in the neuron's own layer
        score = scores.get((layer, index))
        fill, tip = (("#fff", f"L{layer}.{index}: below the coarse threshold") if score is None
                     else (_color(score, vmax), f"L{layer}.{index}: {score:.4g}"))
        out.append(f'<a href="#neuron/L{layer}.{index}"><rect x="{x}" y="{top + ch * layer}" width="{cw - 1}" '
                   f'height="{ch - 1}" fill="{fill}"><title>{e(tip)}</title></rect></a>')
        out.append(f'<text transform="translate({x + 9},{top + ch * layers + 4}) rotate(60)" font-size="8">'
                   f'{index}</text>')
    out.append(f'<text x="{left}" y="12" font-size="10">{e(title)} (max |score| {vmax:.3g})</text></svg>')
    return "".join(out)


MAP_COLUMNS = 768  # pixels across a full layer x neuron map; wider layers are pooled


def map_png(scores: np.ndarray) -> tuple[str, float, int]:
    """(base64 PNG, colour scale, neurons per pixel) of a (layers, neurons) score map.  Layers wider
    than MAP_COLUMNS are pooled: a pixel shows the score of largest magnitude among its neurons, so
    a strong neuron is never averaged away."""
    from matplotlib import colormaps
    from PIL import Image

    layers, width = scores.shape
    pool = -(-width // MAP_COLUMNS)
    x = np.pad(scores.astype(np.float32), ((0, 0), (0, pool * -(-width // pool) - width))).reshape(layers, -1, pool)
    pooled = np.take_along_axis(x, np.abs(x).argmax(-1)[..., None], -1)[..., 0]
    vmax = float(np.abs(pooled).max()) or 1.0
    # an 8-bit palette image (255 levels of the colour map): a third of an RGB PNG's size
    levels = np.rint((pooled / vmax + 1) / 2 * 254).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(levels), mode="P")
    image.putpalette(colormaps["RdBu_r"](np.linspace(0, 1, 255), bytes=True)[:, :3].reshape(-1).tolist())
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii"), vmax, pool


def full_heatmap(scores: np.ndarray, title: str) -> str:
    """A full layer x neuron map as an inlined image with its scale in the caption."""
    data, vmax, pool = map_png(scores)
    layers, width = scores.shape
    columns = -(-width // pool)
    shown_w = MAP_COLUMNS if columns * 2 > MAP_COLUMNS else columns * 2
    shown_h = layers * max(3, min(16, 240 // layers))
    pooled = f", one pixel per {pool} neurons (the largest |score|)" if pool > 1 else ""
    return (f'<figure class=fullmap><img alt="{e(title)}" src="data:image/png;base64,{data}" width="{shown_w}" '
            f'height="{shown_h}" style="image-rendering:pixelated;border:1px solid #ccc">'
            f'<figcaption class=note>{e(title)}: layers 0-{layers - 1} top to bottom, neurons 0-{width - 1} left to '
            f'right{pooled}; red positive, blue negative, scale ±{vmax:.3g}</figcaption></figure>')


def histogram_svg(hist: dict) -> str:
    counts, edges = hist["counts"], hist["edges"]
    if not counts or hist["n"] == 0:
        return "<p>(no prompt activations)</p>"
    w, h, left, bottom = 360, 120, 30, 20
    bw, top = w / len(counts), max(counts)
    bars = []
    for i, c in enumerate(counts):
        bh = (h - 10) * c / top if top else 0
        bars.append(f'<rect x="{left + i * bw:.1f}" y="{h - bh:.1f}" width="{bw - 1:.1f}" height="{bh:.1f}" '
                    f'fill="#4a78b5"><title>[{edges[i]:.3g}, {edges[i + 1]:.3g}): {c}</title></rect>')
    axis = (f'<text x="{left}" y="{h + 14}" font-size="9">{edges[0]:.3g}</text>'
            f'<text x="{left + w}" y="{h + 14}" font-size="9" text-anchor="end">{edges[-1]:.3g}</text>'
            f'<text x="{left - 4}" y="12" font-size="9" text-anchor="end">{top}</text>')
    return (f'<svg class="hist" width="{left + w + 10}" height="{h + bottom}" role="img">'
            f'<title>activation at the blank over {hist["n"]} prompts</title>{"".join(bars)}{axis}</svg>')


def _sentence_html(item: dict, vmax: float) -> str:
    toks = "".join(f'<span class="tok" style="background:{_color(a, vmax)}" title="{a:.4g}">{e(t)}</span>'
                   for t, a in zip(item["tokens"], item["acts"]))
    src = item["source"]
    where = _link(src, src) if src.startswith("fact/") else "sentence"
    return f'<tr><td class="num">{item["max"]:.3g}</td><td>{where}</td><td class="sent">{toks}</td></tr>'


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _rel_change(after: list[float], before: list[float]) -> float | None:
    pairs = [(a, b) for a, b in zip(after, before) if b > 0]
    return _mean([(a - b) / b for a, b in pairs]) if pairs else None


def build_views(d: dict) -> tuple[dict[str, str], list[list[str]]]:
    """{fragment: HTML} for every view, and the search index [[text, fragment, kind]]."""
    facts, mp, maps = d["facts"], d["model_part"], d.get("maps")
    effects, neurons = mp["effects"], mp["neurons"]
    layers = int(max([int(n[1:].split(".")[0]) for n in neurons] + [0])) + 1
    layers = max(layers, max([c[0] for f in facts for p in f["coarse"] for c in p] + [0]) + 1)
    by_rel: dict[str, list[dict]] = {}
    for f in facts:
        by_rel.setdefault(f["relation"], []).append(f)
    owners: dict[str, list[int]] = {}
    for f in facts:
        for n in f["kn"]:
            owners.setdefault(n, []).append(f["id"])
    views, index = {}, []

    # Relations
    rows = []
    for rel, fs in by_rel.items():
        s = d["summary"].get(rel, {}).get("kn", {})
        used = [f for f in fs if not f["skipped"]]
        sup = _mean([_rel_change(effects.get(str(f["id"]), {}).get("suppress", []), f["prob"]) for f in used])
        amp = _mean([_rel_change(effects.get(str(f["id"]), {}).get("amplify", []), f["prob"]) for f in used])
        counts: dict[str, int] = {}
        for f in used:
            for n in f["kn"]:
                counts[n] = counts.get(n, 0) + 1
        shared = sorted((n for n, c in counts.items() if c >= 2), key=lambda n: -counts[n])
        label = d["labels"].get(rel, "")
        rows.append([_link(f"relation/{rel}", rel, "rel"), e(label), str(len(used)),
                     _f(s.get("neurons_per_fact")), _f(s.get("p")),
                     "–" if sup is None else f"{100 * sup:+.1f}%", "–" if amp is None else f"{100 * amp:+.1f}%",
                     " ".join(f"{_nlink(n)}&times;{counts[n]}" for n in shared[:12]) or "none"])
        index.append([f"{rel} {label}", f"relation/{rel}", "relation"])
    cfg = d["config"]
    views["relations"] = (
        f"<h2>Relations</h2><p>Run <code>{e(d['run_dir'])}</code>, model <code>{e(str(mp.get('model')))}</code>, "
        f"data <code>{e(str(cfg.get('data')))}</code>. Suppress/amplify: mean relative change of the gold "
        "probability on a fact's own prompts when its refined neurons are set to 0 / doubled.</p>"
        + _table(["relation", "label", "facts", "neurons per fact", "p", "suppress", "amplify",
                  "shared neurons (facts)"], rows, "relations"))

    for rel, fs in by_rel.items():
        rows = [[_link(f"fact/{f['id']}", f["subject"], "fact"), e(f["object"]),
                 str(len(f["prompts"])), _f(_mean(f["prob"])) if f["prob"] else "–",
                 "skipped" if f["skipped"] else " ".join(_nlink(n) for n in f["kn"]) or "none"] for f in fs]
        views[f"relation/{rel}"] = (f"<h2>Relation {e(rel)} {e(d['labels'].get(rel, ''))}</h2>"
                                    + _table(["subject", "object", "prompts", "mean gold prob", "knowledge neurons"],
                                             rows, "facts"))

    for f in facts:
        fid, eff = f["id"], effects.get(str(f["id"]), {})
        index.append([f"{f['subject']} → {f['object']} ({f['relation']})", f"fact/{fid}", "fact"])
        prows = []
        for k, prompt in enumerate(f["prompts"]):
            prob = f["prob"][k] if k < len(f["prob"]) else None
            sup = eff.get("suppress", [None] * len(f["prompts"]))[k]
            amp = eff.get("amplify", [None] * len(f["prompts"]))[k]
            prows.append([str(k), e(prompt), _f(prob), _f(sup), _f(amp)])
        share = {}
        for p in f["coarse"]:
            for layer, idx, _ in p:
                share[f"L{layer}.{idx}"] = share.get(f"L{layer}.{idx}", 0) + 1
        nrows = [[_nlink(n), str(share.get(n, 0)), " ".join(_link(f"fact/{o}", facts[o]["subject"]) for o in owners[n]
                                                           if o != fid) or "none"] for n in f["kn"]]
        columns = sorted({(layer, idx) for p in f["coarse"] for layer, idx, _ in p})
        heat = []
        for k, p in enumerate(f["coarse"]):
            heat.append(heatmap_svg({(a, b): s for a, b, s in p}, layers, columns, f"prompt {k}"))
        refined = [tuple(int(x) for x in n[1:].split(".")) for n in f["kn"]]
        mean_scores = {}
        for col in refined:
            vals = [s for p in f["coarse"] for a, b, s in p if (a, b) == col]
            mean_scores[col] = sum(vals) / len(f["coarse"]) if f["coarse"] else 0.0
        related = sorted({o for n in f["kn"] for o in owners[n] if o != fid})
        full_maps = ""
        if maps is not None and fid in maps:
            fact_maps = maps[fid]
            full_maps = (full_heatmap(fact_maps.mean(0), "every neuron, mean over the prompts (what refinement reads)")
                         + "".join(full_heatmap(m, f"every neuron, prompt {k}") for k, m in enumerate(fact_maps)))
        views[f"fact/{fid}"] = (
            f"<h2>Fact {fid}: {e(f['subject'])} → {e(f['object'])} "
            f"({_link('relation/' + f['relation'], f['relation'])})</h2>"
            + ("<p><b>Skipped by discovery</b> (the answer is not one token for this model).</p>" if f["skipped"] else "")
            + "<h3>Prompts</h3>" + _table(["#", "prompt", "gold prob", "suppressed (x0)", "amplified (x2)"],
                                          prows, "prompts")
            + "<h3>Knowledge neurons (refined set)</h3>"
            + _table(["neuron", "prompts whose coarse set has it", "other facts with it"], nrows, "kn")
            + "<p>Facts that share its neurons: " + (" ".join(_link(f"fact/{o}", facts[o]["subject"])
                                                             for o in related) or "none") + "</p>"
            + "<h3>Attribution heatmaps</h3>" + full_maps
            + "<p class=note>The coarse neurons: layer x neuron scores of the neurons at or above the coarse threshold "
              "(threshold x max) in some prompt, as the run stores them; a white cell is below the threshold; click "
              "a cell to open the neuron.</p>"
            + heatmap_svg(mean_scores, layers, refined, "refined set (mean score over prompts)")
            + "".join(heat))

    src = mp.get("sentence_source") or "none"
    for name, entry in neurons.items():
        index.append([name, f"neuron/{name}", "neuron"])
        vmax = max([abs(a) for side in ("top", "bottom") for it in entry[side] for a in it["acts"][1:]] or [1.0])
        vocab = _table(["top tokens", "logit", "bottom tokens", "logit"],
                       [[f"<code>{e(t)}</code>", f"{v:.3g}", f"<code>{e(b)}</code>", f"{w:.3g}"]
                        for (t, v), (b, w) in zip(entry["vocab"]["top"], entry["vocab"]["bottom"])], "vocab")
        fact_links = " ".join(_link(f"fact/{o}", f"{facts[o]['subject']} → {facts[o]['object']}") for o in owners.get(name, []))
        rels = sorted({facts[o]["relation"] for o in owners.get(name, [])})
        base = [f["id"] for f in facts if name in f["baseline"]]
        views[f"neuron/{name}"] = (
            f"<h2>Neuron {e(name)}</h2>"
            + f"<p>Knowledge neuron of: <span class=owners>{fact_links or 'no fact'}</span>. Relations: "
            + (" ".join(_link(f"relation/{r}", r) for r in rels) or "none")
            + (". Baseline set of: " + " ".join(_link(f"fact/{o}", facts[o]["subject"]) for o in base) if base else "")
            + "</p><h3>Value slot through the output embedding</h3><p class=note>Logits of the value slot times the "
              "output embedding, as LM-Debugger and the logit lens do it. An approximation: the model's final norm "
              "(and a masked LM's head transform) is left out.</p>" + vocab
            + "<h3>Top-activating texts</h3><p class=note>Ranked by the maximum activation over the tokens after the "
              "first (the first position, [CLS] or a decoder's attention sink, dwarfs the rest); prompts of "
              f"the run and sentences from <code>{e(src)}</code> ({mp.get('sentences', 0)} scanned). Red positive, "
              "blue negative.</p>"
            + '<table class="sents top">' + "".join(_sentence_html(it, vmax) for it in entry["top"]) + "</table>"
            + "<h3>Bottom-activating texts</h3>"
            + '<table class="sents bottom">' + "".join(_sentence_html(it, vmax) for it in entry["bottom"]) + "</table>"
            + f"<h3>Activation at the blank ({entry['hist']['n']} prompts)</h3>" + histogram_svg(entry["hist"]))
    return views, index


_CSS = """body{font:14px system-ui,sans-serif;margin:0}header{background:#223;color:#fff;padding:8px 16px;display:flex;
gap:16px;align-items:center}header a{color:#fff}main{padding:8px 16px}table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}th{background:#f3f3f3}
.tok{padding:0 1px;border-radius:2px}.note{color:#555;font-size:12px}a.neuron{font-family:monospace}
#results li{margin:2px 0}svg{display:block;margin:6px 0}"""

_JS = """
const DATA = JSON.parse(document.getElementById('data').textContent);
const main = document.getElementById('view');
const asked = {};
window.kneuronChunk = function (k, views) { Object.assign(DATA.views, views); asked[k] = 'done'; show(); };
function show() {
  const frag = decodeURIComponent(location.hash.slice(1)) || 'relations';
  if (frag.startsWith('search/')) { search(frag.slice(7)); return; }
  const k = (DATA.chunk || {})[frag];
  if (!(frag in DATA.views) && k !== undefined && asked[k] !== 'done') {
    main.innerHTML = '<p class=loading>Loading…</p>';
    if (!asked[k]) {
      asked[k] = 'asked';
      const s = document.createElement('script');
      s.src = DATA.chunkDir + '/chunk-' + k + '.js';
      s.onerror = () => { main.innerHTML = '<p class=missing>Cannot read <code></code> (keep it beside the page).</p>';
                          main.querySelector('code').textContent = s.src; };
      document.body.append(s);
    }
    return;
  }
  main.innerHTML = DATA.views[frag] || '<p class=missing>No view named <code></code>.</p>';
  if (!DATA.views[frag]) main.querySelector('code').textContent = frag;
  document.title = frag + ' - kneuron explorer';
  window.scrollTo(0, 0);
}
function search(q) {
  document.getElementById('q').value = q;
  const words = q.toLowerCase().split(/\\s+/).filter(Boolean);
  const hits = DATA.index.filter(([text]) => words.every(w => text.toLowerCase().includes(w)));
  main.innerHTML = '<h2>Search</h2><p id=count></p><ul id=results></ul>';
  document.getElementById('count').textContent = hits.length + ' result(s) for "' + q + '"';
  const ul = document.getElementById('results');
  for (const [text, frag, kind] of hits.slice(0, 500)) {
    const li = document.createElement('li'), a = document.createElement('a');
    a.href = '#' + frag; a.textContent = text; li.append(kind + ': ', a); ul.append(li);
  }
}
document.getElementById('search').addEventListener('submit', ev => {
  ev.preventDefault(); location.hash = 'search/' + encodeURIComponent(document.getElementById('q').value);
});
window.addEventListener('hashchange', show);
show();
"""


MAX_PAGE_BYTES = 40 << 20  # views beyond this go to chunk files beside the page
CHUNK_BYTES = 8 << 20  # about this much of views per chunk file


def _json(obj) -> str:
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/")


def render_page(d: dict, max_page_bytes: int = MAX_PAGE_BYTES, chunk_dir: str = "explorer_files",
                chunk_bytes: int | None = None) -> tuple[str, dict[str, str]]:
    """(page HTML, {chunk file name: script}); no chunks when every view fits in `max_page_bytes`.
    Chunks hold about `chunk_bytes` of views (default: CHUNK_BYTES, or a quarter of a smaller
    `max_page_bytes`)."""
    if chunk_bytes is None:
        chunk_bytes = max(1, min(CHUNK_BYTES, max_page_bytes // 4))
    views, index = build_views(d)
    chunks: dict[str, str] = {}
    where: dict[str, int] = {}
    if sum(len(v) for v in views.values()) > max_page_bytes:
        kept, pending, size = {}, {}, 0

        def flush():
            nonlocal pending, size
            if pending:
                k = len(chunks)
                chunks[f"chunk-{k}.js"] = f"kneuronChunk({k},{_json(pending)});\n"
                where.update({frag: k for frag in pending})
                pending, size = {}, 0

        for frag, view in views.items():
            if not frag.startswith(("fact/", "neuron/")):
                kept[frag] = view
                continue
            pending[frag] = view
            size += len(view)
            if size >= chunk_bytes:
                flush()
        flush()
        views = kept
    data = {"views": views, "index": index}
    if where:
        data.update(chunk=where, chunkDir=chunk_dir)
    payload = _json(data)
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>kneuron explorer</title><style>{_CSS}</style>"
            f"</head><body><header><b>kneuron explorer</b><a href=\"#relations\">Relations</a>"
            f"<form id=search><input id=q placeholder=\"subject, object, relation or L12.3071\" size=36>"
            f"<button>Search</button></form></header><main id=view></main>"
            f"<script type=\"application/json\" id=data>{payload}</script><script>{_JS}</script></body></html>")
    return page, chunks


def build_explorer(run_dir, out=None, model=None, kn=None, log=print, max_page_bytes: int = MAX_PAGE_BYTES,
                   heatmaps: str = "auto") -> Path:
    """Write the explorer page for a run (default RUN_DIR/explorer.html) atomically; return its path.

    A large run's fact and neuron views go to `OUT_files/` beside the page (see the module's
    docstring); that folder is replaced as a whole, and removed when no longer needed."""
    out = Path(out) if out is not None else Path(run_dir) / "explorer.html"
    if out.exists() and out.is_dir():
        raise KneuronError(f"cannot write {out}: it is a directory")
    if not out.parent.is_dir():
        raise KneuronError(f"cannot write {out}: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise KneuronError(f"cannot write {out}: permission denied")
    chunk_dir = out.with_name(out.stem + "_files")
    page, chunks = render_page(explorer_data(run_dir, model=model, kn=kn, log=log, heatmaps=heatmaps),
                               max_page_bytes=max_page_bytes, chunk_dir=chunk_dir.name)
    tmp = out.with_name(out.name + ".tmp")
    tmp_dir = chunk_dir.with_name(chunk_dir.name + ".tmp")
    old_dir = chunk_dir.with_name(chunk_dir.name + ".old")
    try:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if chunks:
            tmp_dir.mkdir()
            for name, script in chunks.items():
                (tmp_dir / name).write_text(script, encoding="utf-8")
        tmp.write_text(page, encoding="utf-8")
        if chunk_dir.exists():  # swap the folders, then the page: a reader sees old or new, never a mix for long
            shutil.rmtree(old_dir, ignore_errors=True)
            os.replace(chunk_dir, old_dir)
        if chunks:
            os.replace(tmp_dir, chunk_dir)
        os.replace(tmp, out)
        shutil.rmtree(old_dir, ignore_errors=True)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise KneuronError(f"cannot write {out}: {exc.strerror}") from None
    return out
