"""`kneuron explore`: one self-contained, offline HTML page to look at a run's knowledge neurons.

`explorer_data` gathers (and caches in the run directory) what the page shows; `render_page`
turns it into HTML; `build_explorer` does both and writes the file atomically.
"""

from kneuron.explorer.data import explorer_data
from kneuron.explorer.page import build_explorer, render_page

__all__ = ["build_explorer", "explorer_data", "render_page"]
