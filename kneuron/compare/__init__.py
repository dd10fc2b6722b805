"""Comparing localization methods under causal tests (`kneuron compare`)."""

from kneuron.compare.engine import (
    COLUMNS,
    TUNING_COLUMNS,
    CompareConfig,
    CompareResult,
    check_budgets,
    check_methods,
    compare,
)
from kneuron.compare.scores import METHODS

__all__ = ["COLUMNS", "METHODS", "TUNING_COLUMNS", "CompareConfig", "CompareResult", "check_budgets", "check_methods", "compare"]
