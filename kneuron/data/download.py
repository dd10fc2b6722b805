"""Fetch PARAREL and BINGREL from the authors' public GitHub repositories, verified.

Files come from raw.githubusercontent.com at the commits named in the shared data READMEs, so a
download is byte-identical to `shared/data/`.  Every PARAREL file, and the three BINGREL files
the shared copy holds, is checked against the SHA256 below (taken from the shared `SHA256SUMS`).
The other 31 BINGREL files have no published hash: they are accepted only if they parse as
BINGREL and hold one element per fact of their relation, and their hash is then recorded in the
destination's `SHA256SUMS` so that later runs check against it.

A file is written to a temporary name beside its target and renamed only once verified, so an
interrupted or corrupt download never leaves a file that looks complete.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kneuron.data.bingrel import bingrel_filename, validate_bags
from kneuron.errors import DataError
from kneuron.files import sha256_file
from kneuron.paths import cache_dir

DEFAULT_BASE_URL = "https://raw.githubusercontent.com"
PARAREL_REPO, PARAREL_COMMIT = "yanaiela/pararel", "7cdb6a8b3c54b9d8a3dee92477173dc94ec2da84"
KN_REPO, KN_COMMIT = "Hunter-DDM/knowledge-neurons", "c51b44a79bc935961c27fabf2c6f8e523a669cbb"
SUMS_FILE = "SHA256SUMS"
CHUNK = 1 << 16
TIMEOUT_S = 60

# From shared/data/pararel/SHA256SUMS (raw/facts/ is not fetched: load_pararel does not read it).
PARAREL_SHA256 = {
    "raw/knowledge-neurons/data_11.json": "a7d540bcea171543e432df1e8f8ab1c81a4041c0d0b3ff92ab9eebc2a417edaa",
    "raw/knowledge-neurons/query_pairs.json": "ada5c1530d9554b774614179e57a7e2a9e11c30aadddded1aa6dcca0b0f05f3a",
    "raw/knowledge-neurons/relations.jsonl": "a35bc05a53939b844dd2441fbf6f80d0a6a315fee61c863db81b9b37124699ba",
    "raw/patterns/P1001.jsonl": "160413abdb74470f19ca0fc97fc54b8241b6526fb54a73dc8906fb79cbd9ee20",
    "raw/patterns/P101.jsonl": "199eb2fbdcb6c26ac81ac0d48b485521d57fa961c9902840d4f5fc937f59e94c",
    "raw/patterns/P103.jsonl": "edb4df57360abb418ec72e96d518bd42f216ccac578bedbca6f5f769c76951fb",
    "raw/patterns/P106.jsonl": "4066382c8e5d6038024aa1c601aa53fab7c48596677ed26d71240597d42ee5c1",
    "raw/patterns/P108.jsonl": "0fb4993970e59f5acec2af83b3bba9c54b171db201f46ad28967f79a054dc220",
    "raw/patterns/P127.jsonl": "aa5d85fe2e44b9776e6b16b7ff7ef462a85f09b33315d31106939f0e74fd7917",
    "raw/patterns/P1303.jsonl": "5918d169f43d7486459d421816a9d2cd1935c4e857f2de01ebcae7120dddb94c",
    "raw/patterns/P131.jsonl": "a0e7cd10922b61fb6b200c2c3b3a33cd0c6944446a7659b66b269a21762ecaa7",
    "raw/patterns/P136.jsonl": "677f9878d4d26a53de5d5c874fe5e28cd1a37b3ef678acac36944df4c01134ca",
    "raw/patterns/P1376.jsonl": "67c9bc7dc08bcca42ba5d5fbd11b35c0bcf41a961bba87d760e4b29f196a9bbd",
    "raw/patterns/P138.jsonl": "a15d8689fb52c2245cb76244ac4fce40eef868c445473b94d5888586a46fc3ad",
    "raw/patterns/P140.jsonl": "1adf3a553047050b195e9305efe0fb3bf34d913b320818a3e88c1fdd161789df",
    "raw/patterns/P1412.jsonl": "b2869ca24f313bbfd815a02259bf53c37ce39df0b11a2704f791df47b1e12b3d",
    "raw/patterns/P159.jsonl": "9679b341f4fb8ea9d48d9398bc439a8869908e485818638a4345437f9ee97002",
    "raw/patterns/P17.jsonl": "2717b226dbca5237ec3e8e405a6464baedc5c4d7b13554204aafa76df740f711",
    "raw/patterns/P176.jsonl": "13aa5d5af04b58b16b9b6a99ba6c96dbdef7a4fae7dcceaffaa67a2ce5301401",
    "raw/patterns/P178.jsonl": "5fbdd8e8a6dc85a686a7067bdc0d6fd35307e5c17b121ddcecdcd2da448d1313",
    "raw/patterns/P19.jsonl": "7c6016bb80b386b8e7f8a99d5c73ea925ed2b9f29d5c0c9c252938c9533b3522",
    "raw/patterns/P190.jsonl": "5edac1cbc8454283623b6e20304a78c53b28ce0bb998826d358a8739809077a3",
    "raw/patterns/P20.jsonl": "a209a17ecb4ccf0f67261072e97596900d9e77bdd70c3e8a99654af1039f98a4",
    "raw/patterns/P264.jsonl": "53274030ad439f0bfb85bda4390fd7f7a9868c8a3f68e151e08c91e596e7bc74",
    "raw/patterns/P27.jsonl": "e5ce71502ec3c287749e649a1ac4640878801b3dfc49df8eea1c8fca65347f76",
    "raw/patterns/P276.jsonl": "2ee34c4fda9d9352f6eba0d8b41b0313ce2eb24ed3cabc4ac131c9f1e9cd1fc5",
    "raw/patterns/P279.jsonl": "ff2b73df5edb13718a5f4bb2004e924ff99314e6625bd35c0ca4aab9dd7363ec",
    "raw/patterns/P30.jsonl": "69f0152df42e17dca5c3181ddf1ccca8110fba50fd4b61fe9e48c22c8e5adb93",
    "raw/patterns/P36.jsonl": "78cbc36c71073ee993b2f7194c9b216af839859cefb0186cef2c2bc89f377def",
    "raw/patterns/P361.jsonl": "5255cd61805e25590013518aec793b2bc51d635a02a9088cf0b5788f9db4c1a8",
    "raw/patterns/P364.jsonl": "c96f42f6dde8ed78be284bfc3666056304d399e0372beb2fb629382feeb9ca3f",
    "raw/patterns/P37.jsonl": "b5c4ad242edcf9104c4fb0caa3a470ac3bc2a5cfd02f160d5b0d96969f63bfea",
    "raw/patterns/P39.jsonl": "51de02294859454289284c781bbcd54e038842d0040e55f598ead3652035307f",
    "raw/patterns/P407.jsonl": "a87b9e7d7728de1f782013edee4567e7c5fe6242419c691f48a4177d166df532",
    "raw/patterns/P413.jsonl": "3d1e94ada2e9f27eb99275f2e07c80d21b9a5ea677fe6fa751395ffc778ba0fe",
    "raw/patterns/P449.jsonl": "cea08d3d7df17f648d84814a7c607476f8fc4291b94976b88658f1b35cf90fb8",
    "raw/patterns/P463.jsonl": "7973e666b4e33c05f8a8cfec6cbd0b3d09edf40bf9a7a3833e12bc3737399ce6",
    "raw/patterns/P47.jsonl": "329108ae3e0138c7af09697b1ea33e1808ccdbe8931d05c02b5334b686b229e2",
    "raw/patterns/P495.jsonl": "3a2abf7c9ffcf1753e27efa15a915d838c472f5e52f249410d0af47cfac7d9c2",
    "raw/patterns/P530.jsonl": "cc6193686be94ed9fe37deb765753e11c714f6f473e2b2bc171839700b31915d",
    "raw/patterns/P740.jsonl": "dc588e68ea43ac4f9ef3942d3d3b4b0aee0c099f72001caf51036b0da54f61a7",
    "raw/patterns/P937.jsonl": "05a2822a2d62a012ea80f6e92401b6990a5ce05fc6543a4df6b34b4b3cacc2dd",
}

# From shared/data/bingrel/SHA256SUMS: the only BINGREL files with a known hash.
BINGREL_SHA256 = {
    "final_distant_allbags_P1376_new.json": "440690ea802a7648ac2e5b609b4fe8c527ab85b2e02149270d4ee11444f434aa",
    "final_distant_allbags_P463_new.json": "8229b5490be18afbca2e54a79b3eeb616b8aa3613eebdaaf56f80e3ab2ceab34",
    "final_distant_allbags_P937_new.json": "92a85869df4fa635e983fb882b662eeda8cd10df56bef322c616947e44260076",
}

# One BINGREL element per fact: the fact counts of query_pairs.json, in numeric relation order.
BINGREL_ELEMENTS = {
    "P19": 944,
    "P20": 953,
    "P27": 966,
    "P30": 975,
    "P36": 703,
    "P37": 966,
    "P39": 892,
    "P47": 922,
    "P101": 696,
    "P103": 977,
    "P106": 958,
    "P108": 383,
    "P127": 687,
    "P136": 931,
    "P138": 645,
    "P140": 473,
    "P159": 967,
    "P176": 982,
    "P178": 592,
    "P190": 995,
    "P264": 429,
    "P279": 964,
    "P364": 856,
    "P407": 877,
    "P413": 952,
    "P449": 881,
    "P463": 225,
    "P495": 909,
    "P530": 996,
    "P740": 936,
    "P937": 954,
    "P1303": 949,
    "P1376": 234,
    "P1412": 969,
}


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: where it lives upstream, where it goes, and how to trust it."""

    repo: str  # "owner/name"
    commit: str
    remote_path: str
    local_path: str  # relative to the destination folder
    sha256: str | None = None  # None: check `elements` and the structure instead
    elements: int | None = None  # BINGREL: expected list length (facts of the relation)

    def url(self, base_url: str = DEFAULT_BASE_URL) -> str:
        return f"{base_url.rstrip('/')}/{self.repo}/{self.commit}/{self.remote_path}"


def pararel_manifest() -> list[RemoteFile]:
    kn_sources = {
        "raw/knowledge-neurons/query_pairs.json": "data/PARAREL/query_pairs.json",
        "raw/knowledge-neurons/data_11.json": "data/PARAREL/data_11.json",
        "raw/knowledge-neurons/relations.jsonl": "data/LAMA/raw_data/relations.jsonl",
    }
    files = []
    for local, sha in PARAREL_SHA256.items():
        if local.startswith("raw/patterns/"):
            name = local.rsplit("/", 1)[1]
            remote = f"data/pattern_data/graphs_json/{name}"
            files.append(RemoteFile(PARAREL_REPO, PARAREL_COMMIT, remote, local, sha))
        else:
            files.append(RemoteFile(KN_REPO, KN_COMMIT, kn_sources[local], local, sha))
    return files


def bingrel_manifest(relations: Sequence[str] | None = None) -> list[RemoteFile]:
    rels = list(relations) if relations else list(BINGREL_ELEMENTS)
    unknown = [r for r in rels if r not in BINGREL_ELEMENTS]
    if unknown:
        raise DataError(
            f"no BINGREL file for relation(s) {', '.join(unknown)}; known: {', '.join(BINGREL_ELEMENTS)}"
        )
    files = []
    for rel in rels:
        name = bingrel_filename(rel)
        files.append(
            RemoteFile(
                KN_REPO,
                KN_COMMIT,
                f"data/BingDistantTREx/final/{name}",
                name,
                BINGREL_SHA256.get(name),
                BINGREL_ELEMENTS[rel],
            )
        )
    return files


DATASETS = {"pararel": pararel_manifest, "bingrel": bingrel_manifest}


def default_dest(dataset: str) -> Path:
    return cache_dir() / "data" / dataset


def _read_sums(dest: Path) -> dict[str, str]:
    sums = {}
    path = dest / SUMS_FILE
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split(maxsplit=1)
            if len(parts) == 2:
                sums[parts[1].lstrip("*")] = parts[0]
    return sums


def _write_sums(dest: Path, sums: dict[str, str]) -> None:
    text = "".join(f"{h}  {p}\n" for p, h in sorted(sums.items()))
    tmp = dest / f".{SUMS_FILE}.part"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, dest / SUMS_FILE)


def _problem(entry: RemoteFile, path: Path, digest: str, recorded: str | None) -> str | None:
    """Why `path` cannot be trusted as `entry`, or None when it can."""
    expected = entry.sha256 or recorded
    if expected:
        return None if digest == expected else f"checksum mismatch: expected sha256 {expected}, got {digest}"
    try:
        with path.open(encoding="utf-8") as fh:
            bags = validate_bags(json.load(fh), path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"not valid JSON ({exc})"
    except DataError as exc:
        return str(exc)
    if entry.elements is not None and len(bags) != entry.elements:
        return f"{len(bags)} elements, expected {entry.elements} (one per fact)"
    return None


def _fetch(url: str, target: Path) -> Path:
    """Stream `url` to a temporary file beside `target`; the caller verifies and renames it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            for block in iter(lambda: resp.read(CHUNK), b""):
                out.write(block)
    except urllib.error.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot download {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot download {url}: {exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def download(
    dataset: str,
    dest: str | Path | None = None,
    base_url: str = DEFAULT_BASE_URL,
    manifest: Sequence[RemoteFile] | None = None,
    relations: Sequence[str] | None = None,
    on_file: Callable[[RemoteFile, str], None] | None = None,
) -> Path:
    """Fetch `dataset` ("pararel" or "bingrel") into `dest` (default `cache_dir()/data/<dataset>`).

    Files already present and verified are kept.  `base_url` replaces "https://raw.githubusercontent.com"
    (the `owner/repo/commit/path` rest of each URL is kept, so one mirror serves both repositories).
    `manifest` overrides the built-in file list, e.g. for tests.  `relations` limits BINGREL to some
    relations.  `on_file(entry, status)` is called with status "present" or "downloaded".
    Returns the destination folder.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if manifest is None:
        manifest = bingrel_manifest(relations) if dataset == "bingrel" else pararel_manifest()
    elif relations:
        raise DataError("give either a manifest or relations, not both")
    dest = Path(dest).expanduser() if dest is not None else default_dest(dataset)
    dest.mkdir(parents=True, exist_ok=True)
    sums = _read_sums(dest)
    try:
        for entry in manifest:
            target = dest / entry.local_path
            if target.is_file():
                digest = sha256_file(target)
                if _problem(entry, target, digest, sums.get(entry.local_path)) is None:
                    sums[entry.local_path] = digest
                    if on_file:
                        on_file(entry, "present")
                    continue
            url = entry.url(base_url)
            tmp = _fetch(url, target)
            digest = sha256_file(tmp)
            # A hash recorded by an earlier run is not authoritative for a fresh download.
            problem = _problem(entry, tmp, digest, None)
            if problem:
                tmp.unlink(missing_ok=True)
                raise DataError(f"{url}: {problem}")
            os.replace(tmp, target)
            sums[entry.local_path] = digest
            if on_file:
                on_file(entry, "downloaded")
    finally:
        if sums:
            _write_sums(dest, sums)
    return dest
