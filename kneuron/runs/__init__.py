"""Dataset-scale runs that write a run directory and resume after interruption."""

from kneuron.runs.config import DiscoveryConfig
from kneuron.runs.discover import DiscoveryResult, discover, load_records, load_run
from kneuron.runs.rundir import RunDir, neuron_sets

__all__ = ["DiscoveryConfig", "DiscoveryResult", "RunDir", "discover", "load_records", "load_run", "neuron_sets"]
