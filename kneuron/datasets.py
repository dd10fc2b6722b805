"""Public data API: `kneuron.datasets.load_pararel(dir)` and friends (see `kneuron.data`)."""

from kneuron.data import *  # noqa: F401,F403
from kneuron.data import __all__  # noqa: F401
