"""The smallest fact world the world tests build: 4 relations, 24 facts."""

from kneuron.world import WorldConfig

TINY_WORLD = WorldConfig(
    n_countries=6, n_continents=2, n_languages=3, cities_per_country=2, n_companies=3, n_persons=8,
    n_instruments=3, n_organizations=3, facts_per_relation=6, th_per_fact=(1, 2), h_per_fact=(1, 2),
    relations=("W1", "W3", "W7", "W10"),
)
