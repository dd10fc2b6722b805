"""Real facts in several languages, shipped with kneuron (see PROVENANCE.md beside this file).

`REAL_FACTS`: 30 capitals in English, French, Spanish and German, written for SmolLM2 and
Gemma 3; every prompt ends at the blank, so decoders can answer it.  Use it as
`kneuron multilingual --data real-multilingual` or `load_multilingual_facts(REAL_FACTS)`.
"""

from pathlib import Path

REAL_FACTS = Path(__file__).with_name("capitals.jsonl")

__all__ = ["REAL_FACTS"]
