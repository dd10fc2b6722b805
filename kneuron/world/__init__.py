"""The fact world: an invented, seeded world of facts plus a small BERT (or Llama) that knows them.

It is the embedded default that lets the whole knowledge-neuron pipeline (attribution,
suppression/amplification, BINGREL-style T1/T2/T3 activations, fact editing, relation erasing) run
offline on a CPU.  Typical use::

    from kneuron.world import ensure_world, load_world_facts
    world_dir = ensure_world()            # trained once (~2 min), then cached
    facts = load_world_facts(world_dir)   # FactSet; the model loads with transformers Auto classes
"""

from kneuron.world.generate import (
    RELATIONS,
    World,
    WorldConfig,
    WorldRelation,
    fill_template,
    generate_world,
    multilingual_world_config,
)
from kneuron.world.store import (
    BUILTIN_MODELS,
    FORMAT_VERSION,
    MULTILINGUAL_MODELS,
    bingrel_file,
    build_world,
    builtin_model_dir,
    default_world_config,
    default_world_dir,
    ensure_world,
    is_world_dir,
    load_world_bingrel,
    load_world_facts,
    load_world_meta,
    load_world_relations,
    save_world_data,
)
from kneuron.world.train import (
    TrainConfig,
    build_tokenizer,
    evaluate_world_model,
    train_world_model,
)
from kneuron.world.train_causal import CausalTrainConfig, train_causal_world_model

__all__ = [
    "BUILTIN_MODELS",
    "MULTILINGUAL_MODELS",
    "default_world_config",
    "multilingual_world_config",
    "CausalTrainConfig",
    "FORMAT_VERSION",
    "builtin_model_dir",
    "train_causal_world_model",
    "RELATIONS",
    "TrainConfig",
    "World",
    "WorldConfig",
    "WorldRelation",
    "bingrel_file",
    "build_tokenizer",
    "build_world",
    "default_world_dir",
    "ensure_world",
    "evaluate_world_model",
    "fill_template",
    "generate_world",
    "is_world_dir",
    "load_world_bingrel",
    "load_world_facts",
    "load_world_meta",
    "load_world_relations",
    "save_world_data",
    "train_world_model",
]
