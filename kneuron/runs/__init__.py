"""Dataset-scale runs that write a run directory and resume after interruption."""

from kneuron.runs.discover import (
                                    DiscoveryConfig,
                                    DiscoveryResult,
                                    discover,
                                    load_records,
                                    load_run,
                                    neuron_sets,
)

__all__ = ["DiscoveryConfig", "DiscoveryResult", "discover", "load_records", "load_run", "neuron_sets"]
