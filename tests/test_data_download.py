"""Downloads are verified, atomic and idempotent; a file:// mirror stands in for GitHub."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from kneuron.data import load_bingrel, load_pararel
from kneuron.data.download import (
    DEFAULT_BASE_URL,
    KN_COMMIT,
    PARAREL_COMMIT,
    RemoteFile,
    bingrel_manifest,
    download,
    pararel_manifest,
)
from kneuron.errors import DataError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _publish(mirror, entry: RemoteFile, data: bytes) -> None:
    path = mirror / entry.repo / entry.commit / entry.remote_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _leftovers(dest):
    return sorted(p.name for p in dest.rglob("*.part"))


# --- the built-in manifests ------------------------------------------------------------------


def test_pararel_manifest_matches_readme():
    files = pararel_manifest()
    patterns = [f for f in files if f.local_path.startswith("raw/patterns/")]
    assert len(files) == 42 and len(patterns) == 39
    p19 = next(f for f in patterns if f.local_path == "raw/patterns/P19.jsonl")
    assert p19.url() == (
        f"https://raw.githubusercontent.com/yanaiela/pararel/{PARAREL_COMMIT}/data/pattern_data/graphs_json/P19.jsonl"
    )
    rel = next(f for f in files if f.local_path.endswith("relations.jsonl"))
    assert (
        rel.url("file:///m/")
        == f"file:///m/Hunter-DDM/knowledge-neurons/{KN_COMMIT}/data/LAMA/raw_data/relations.jsonl"
    )
    assert all(f.sha256 and len(f.sha256) == 64 for f in files)


def test_embedded_hashes_equal_shared_sums(shared_data, bingrel_dir):
    def sums(path):
        return {p: h for h, p in (ln.split() for ln in path.read_text().splitlines())}

    shared = sums(shared_data / "pararel/SHA256SUMS")
    assert {f.local_path: f.sha256 for f in pararel_manifest()} == {
        p: h for p, h in shared.items() if not p.startswith("raw/facts/")
    }
    hashed = {f.local_path: f.sha256 for f in bingrel_manifest() if f.sha256}
    assert hashed == sums(bingrel_dir / "SHA256SUMS")


def test_bingrel_manifest_counts(pararel):
    files = bingrel_manifest()
    assert len(files) == 34
    assert {f.local_path[len("final_distant_allbags_") : -len("_new.json")]: f.elements for f in files} == {
        rel: len(facts) for rel, facts in pararel.by_relation().items()
    }
    assert [f.local_path for f in bingrel_manifest(["P937"])] == ["final_distant_allbags_P937_new.json"]
    with pytest.raises(DataError, match="no BINGREL file for relation\\(s\\) P17"):
        bingrel_manifest(["P17"])


# --- downloading ------------------------------------------------------------------------------


def test_full_pararel_from_mirror_loads(pararel_mirror, tmp_path, shared_data):
    dest = tmp_path / "dest"
    seen = []
    out = download("pararel", dest, base_url=pararel_mirror.as_uri(), on_file=lambda e, s: seen.append(s))
    assert out == dest and seen == ["downloaded"] * 42
    fs = load_pararel(dest)
    assert fs.stats() == {"relations": 34, "facts": 27_738, "prompts": 253_448}
    assert (dest / "raw/patterns/P279.jsonl").read_bytes() == (
        shared_data / "pararel/raw/patterns/P279.jsonl"
    ).read_bytes()
    sums = (dest / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == 42 and all(line.split("  ")[1].startswith("raw/") for line in sums)
    assert not _leftovers(dest)

    # Second run: everything verified in place, nothing fetched (the mirror is gone).
    shutil.rmtree(pararel_mirror)
    seen.clear()
    download("pararel", dest, base_url=pararel_mirror.as_uri(), on_file=lambda e, s: seen.append(s))
    assert seen == ["present"] * 42


def _tiny_manifest(
    mirror, payloads: dict[str, bytes], hashes: dict[str, str] | None = None
) -> list[RemoteFile]:
    entries = []
    for name, data in payloads.items():
        entry = RemoteFile(
            "o/r", "c0ffee", f"data/{name}", f"raw/{name}", (hashes or {}).get(name, _sha(data))
        )
        _publish(mirror, entry, data)
        entries.append(entry)
    return entries


def test_checksum_mismatch_names_url_and_leaves_nothing(tmp_path):
    mirror, dest = tmp_path / "mirror", tmp_path / "dest"
    manifest = _tiny_manifest(mirror, {"a.json": b"[1]", "b.json": b"[2]"}, {"b.json": _sha(b"[3]")})
    with pytest.raises(DataError, match=r"file://.*/o/r/c0ffee/data/b\.json: checksum mismatch") as err:
        download("pararel", dest, base_url=mirror.as_uri(), manifest=manifest)
    assert "\n" not in str(err.value)
    assert (dest / "raw/a.json").read_bytes() == b"[1]"
    assert not (dest / "raw/b.json").exists()
    assert not _leftovers(dest)
    assert "raw/a.json" in (dest / "SHA256SUMS").read_text()  # progress so far is recorded


def test_unreachable_url_is_one_line_error(tmp_path):
    mirror, dest = tmp_path / "mirror", tmp_path / "dest"
    manifest = _tiny_manifest(mirror, {"a.json": b"[1]"})
    (mirror / "o/r/c0ffee/data/a.json").unlink()
    with pytest.raises(DataError, match=r"cannot download file://.*/data/a\.json") as err:
        download("pararel", dest, base_url=mirror.as_uri(), manifest=manifest)
    assert "\n" not in str(err.value)
    assert not (dest / "raw/a.json").exists() and not _leftovers(dest)
    with pytest.raises(DataError, match="cannot download nosuchscheme://host/o/r/c0ffee/data/a.json"):
        download("pararel", dest, base_url="nosuchscheme://host", manifest=manifest)


def test_corrupt_local_file_is_replaced(tmp_path):
    mirror, dest = tmp_path / "mirror", tmp_path / "dest"
    manifest = _tiny_manifest(mirror, {"a.json": b"[1]"})
    (dest / "raw").mkdir(parents=True)
    (dest / "raw/a.json").write_bytes(b"[1")  # a truncated earlier copy
    seen = []
    download(
        "pararel", dest, base_url=mirror.as_uri(), manifest=manifest, on_file=lambda e, s: seen.append(s)
    )
    assert seen == ["downloaded"] and (dest / "raw/a.json").read_bytes() == b"[1]"


def test_real_bingrel_file_verified_by_hash(bingrel_dir, tmp_path):
    mirror, dest = tmp_path / "mirror", tmp_path / "dest"
    (entry,) = bingrel_manifest(["P1376"])
    assert entry.sha256
    _publish(mirror, entry, (bingrel_dir / entry.local_path).read_bytes())
    download("bingrel", dest, base_url=mirror.as_uri(), relations=["P1376"])
    assert len(load_bingrel(dest)["P1376"]) == 234


def _bags(n: int) -> bytes:
    return json.dumps([{"th_bags": [f"s{i}"], "h_bags": []} for i in range(n)]).encode()


def test_unhashed_bingrel_file_checked_by_structure(tmp_path):
    mirror, dest = tmp_path / "mirror", tmp_path / "dest"
    entry = RemoteFile("o/r", "c0ffee", "data/x.json", "final_distant_allbags_P36_new.json", None, 3)
    _publish(mirror, entry, _bags(3))
    download("bingrel", dest, base_url=mirror.as_uri(), manifest=[entry])
    assert len(load_bingrel(dest)["P36"]) == 3
    # The accepted file's hash is recorded, so a later change upstream is caught on re-download.
    assert f"{_sha(_bags(3))}  final_distant_allbags_P36_new.json" in (dest / "SHA256SUMS").read_text()
    (dest / entry.local_path).write_bytes(_bags(2))
    _publish(mirror, entry, _bags(2))
    with pytest.raises(DataError, match="2 elements, expected 3"):
        download("bingrel", dest, base_url=mirror.as_uri(), manifest=[entry])
    _publish(mirror, entry, b'[{"th_bags": []}]')
    with pytest.raises(DataError, match="element 0: missing key 'h_bags'"):
        download("bingrel", dest, base_url=mirror.as_uri(), manifest=[entry])
    _publish(mirror, entry, b"[{")
    with pytest.raises(DataError, match="not valid JSON"):
        download("bingrel", dest, base_url=mirror.as_uri(), manifest=[entry])
    assert not _leftovers(dest)


def test_default_destination_is_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    mirror = tmp_path / "mirror"
    manifest = _tiny_manifest(mirror, {"a.json": b"[1]"})
    assert download("bingrel", base_url=mirror.as_uri(), manifest=manifest) == tmp_path / "cache/data/bingrel"


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'lama'"):
        download("lama", tmp_path)
    with pytest.raises(DataError, match="either a manifest or relations"):
        download("bingrel", tmp_path, manifest=[], relations=["P19"])
    assert DEFAULT_BASE_URL == "https://raw.githubusercontent.com"
