"""Comparing localization methods under causal tests (`kneuron compare`).

The methods themselves are those registered in `kneuron.localization`.
"""

from kneuron.compare.engine import (
    COLUMNS,
    TUNING_COLUMNS,
    CompareConfig,
    CompareResult,
    check_budgets,
    check_methods,
    compare,
)

__all__ = ["COLUMNS", "TUNING_COLUMNS", "CompareConfig", "CompareResult", "check_budgets", "check_methods", "compare"]
