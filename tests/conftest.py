"""Shared fixtures: the shared datasets (skipped when absent) and tiny data built in tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kneuron.paths import default_data_dir

# Tiny models run fastest on one thread, and several OpenMP threads on a busy 2-core machine
# can slow small ops down by orders of magnitude.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared datasets (`$KNEURON_DATA`, else ../shared/data beside the checkout)."""
    root = default_data_dir()
    if not (root / "pararel" / "raw" / "patterns").is_dir():
        pytest.skip(f"shared datasets not found at {root}; set KNEURON_DATA to the folder holding pararel/")
    return root


@pytest.fixture(scope="session")
def pararel(shared_data):
    """The full shared PARAREL, loaded once per session."""
    from kneuron.data import load_pararel

    return load_pararel(shared_data / "pararel")


@pytest.fixture(scope="session")
def bingrel_dir(shared_data) -> Path:
    path = shared_data / "bingrel"
    if not path.is_dir():
        pytest.skip(f"shared BINGREL slice not found at {path}")
    return path


TINY_PATTERNS = {
    "P36": [
        "The capital of [X] is [Y].",
        "[X]'s capital is [Y].",
        "[Y] is the capital of [X].",
        "[X] capital: [Y].",
    ],
    "P17": [
        "[X] is in [Y].",
        "[X] is located in [Y].",
        "[Y] contains [X].",
    ],  # 3 templates: dropped by default
}
TINY_PAIRS = {"P36": [["France", "Paris"], ["Ireland", "Dublin"]], "P17": [["Paris", "France"]]}
TINY_RELATIONS = [
    {"relation": "P36", "label": "capital", "type": "1-1"},
    {"relation": "P17", "label": "country", "type": "N-1"},
]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture
def make_pararel(tmp_path):
    """Build a PARAREL-shaped folder: `make_pararel(patterns=..., pairs=..., relations=...)` -> its path."""

    def build(patterns=None, pairs=None, relations=None, name="pararel") -> Path:
        root = tmp_path / name
        raw = root / "raw"
        for rel, templates in (TINY_PATTERNS if patterns is None else patterns).items():
            write_jsonl(
                raw / "patterns" / f"{rel}.jsonl",
                [{"pattern": t} if isinstance(t, str) else t for t in templates],
            )
        (raw / "patterns").mkdir(parents=True, exist_ok=True)
        kn = raw / "knowledge-neurons"
        kn.mkdir(parents=True, exist_ok=True)
        (kn / "query_pairs.json").write_text(json.dumps(TINY_PAIRS if pairs is None else pairs, indent=2))
        write_jsonl(kn / "relations.jsonl", TINY_RELATIONS if relations is None else relations)
        return root

    return build


TINY_VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "Paris",
    "France",
    "Ireland",
    "Dub",
    "##lin",
    "The",
    "capital",
    "of",
    "is",
    ".",
    "'",
    "s",
]


@pytest.fixture
def tiny_tokenizer_dir(tmp_path) -> Path:
    """A real WordPiece tokenizer saved like a checkpoint: "Paris" is one token, "Dublin" two, "Atlantis" [UNK]."""
    from transformers import BertTokenizerFast

    src = tmp_path / "vocab"
    src.mkdir()
    (src / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    tok = BertTokenizerFast.from_pretrained(str(src), do_lower_case=False)
    out = tmp_path / "tiny-tokenizer"
    tok.save_pretrained(str(out))
    return out


@pytest.fixture
def tiny_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


@pytest.fixture
def pararel_mirror(shared_data, tmp_path) -> Path:
    """A file:// tree laid out like raw.githubusercontent.com, holding the shared PARAREL files."""
    from kneuron.data.download import pararel_manifest

    mirror = tmp_path / "mirror"
    for entry in pararel_manifest():
        dst = mirror / entry.repo / entry.commit / entry.remote_path
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / "pararel" / entry.local_path, dst)
    return mirror


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A fact world small enough to build and train in a few seconds (4 relations, 2-layer BERT)."""
    pytest.importorskip("kneuron.world", reason="the fact world package is not available")
    from kneuron.world import TrainConfig, WorldConfig, build_world

    wc = WorldConfig(n_countries=6, n_continents=2, n_languages=3, cities_per_country=2, n_companies=3, n_persons=8,
                     n_instruments=3, n_organizations=3, facts_per_relation=6, th_per_fact=(1, 3), h_per_fact=(1, 2),
                     relations=("W1", "W3", "W7", "W10"))
    tc = TrainConfig(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64, max_position_embeddings=64,
                     epochs=2, batch_size=16, num_threads=1)
    return build_world(tmp_path_factory.mktemp("world") / "w", seed=0, world_config=wc, train_config=tc, log=None)



# Tiny models that several test modules share. Module scope: each module builds and loads its own
# copy, so a test that changes a model in place cannot reach another module.
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(root, tiny BERT directory, facts.jsonl) from `tiny_facts.build_discovery_setup`."""
    from tiny_facts import build_discovery_setup

    return build_discovery_setup(tmp_path_factory.mktemp("discovery"))


@pytest.fixture(scope="module")
def bert(setup):
    """The discovery setup's tiny BERT (2 layers), loaded on the CPU."""
    import kneuron

    return kneuron.load(str(setup[1]), device="cpu")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """A saved random tiny Llama (`tiny_decoders.save_tiny_decoder`)."""
    from tiny_decoders import save_tiny_decoder

    return save_tiny_decoder("llama", tmp_path_factory.mktemp("llama") / "m")


@pytest.fixture(scope="module")
def llama(llama_dir):
    """`llama_dir`'s model, loaded on the CPU."""
    import kneuron

    return kneuron.load(str(llama_dir), device="cpu")


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    """The hand-weighted model of `handmade_model`, loaded."""
    from handmade_model import save_handmade_model

    import kneuron

    return kneuron.load(str(save_handmade_model(tmp_path_factory.mktemp("handmade"))))

# The fast lane (`make test-fast`, `pytest -m "not slow"`) leaves out what trains a world, loads a
# real model or opens a browser: tests that ask for these fixtures are marked slow here, so a new
# test that uses them is in the slow lane without remembering a marker.
SLOW_FIXTURES = {"tiny_world", "smollm2", "gemma3"}
SLOW_FILES = {"test_world.py", "test_world_causal.py", "test_world_multilingual.py", "test_explorer.py",
              "test_report.py", "test_real_models.py", "test_real_decoders.py", "test_backends.py",
              "test_memory.py", "test_gguf.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())) or item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def edit_family_dirs(tmp_path_factory) -> dict[str, Path]:
    """Saved tiny llama, gpt2 and BERT directories for the whole-layer edits (ROME, subject neurons);
    each test loads its own copy, so an edit in place reaches no other test."""
    from tiny_decoders import save_tiny_decoder
    from tiny_models import save_tiny_bert

    root = tmp_path_factory.mktemp("edit-families")
    return {"llama": save_tiny_decoder("llama", root / "llama"), "gpt2": save_tiny_decoder("gpt2", root / "gpt2"),
            "bert": save_tiny_bert(root / "bert")}
