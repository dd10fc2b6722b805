"""Size and load time of an explorer page in the system Chromium (Playwright), against an empty page.

    python benchmarks/explorer_load.py PAGE.html [--repeat 5] [--fragment fact/12]

Load time = from navigation to the view rendered (its <h2> drawn; for a view in a chunk file, after
the chunk's script has run), median of the repeats; the empty page's time is printed beside it as
the browser's own floor.  A page split into chunks (`kneuron explore --max-page-mb`) also prints
its chunk files' count and total size.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright


def load_ms(page, url: str, repeat: int, selector: str | None) -> float:
    times = []
    for _ in range(repeat):
        page.goto("about:blank")  # a fresh document each time: a fragment change alone would not reload
        start = time.perf_counter()
        page.goto(url, wait_until="load")
        if selector:
            page.wait_for_selector(selector, timeout=60000)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("page", type=Path)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--fragment", default="", help="the view to load (default: the first, #relations)")
    args = ap.parse_args()
    empty = Path(tempfile.mkdtemp()) / "empty.html"
    empty.write_text("<!doctype html><title>empty</title>")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page()
        base = load_ms(page, empty.as_uri(), args.repeat, None)
        url = args.page.resolve().as_uri() + (f"#{args.fragment}" if args.fragment else "")
        ms = load_ms(page, url, args.repeat, "main#view > h2")
        views = page.evaluate("Object.keys(DATA.views).length")
        chunked = page.evaluate("Object.keys(DATA.chunk || {}).length")
        browser.close()
    size = args.page.stat().st_size
    chunks = sorted(args.page.with_name(args.page.stem + "_files").glob("chunk-*.js"))
    extra = (f", plus {len(chunks)} chunk files, {sum(c.stat().st_size for c in chunks) / 1e6:.2f} MB, "
             f"{chunked} views" if chunks else "")
    print(f"{args.page}: {size / 1e6:.2f} MB, {views} views in the page{extra}; "
          f"#{args.fragment or 'relations'} loads in {ms:.0f} ms (empty page {base:.0f} ms, "
          f"ratio {ms / base:.1f}x), median of {args.repeat}")


if __name__ == "__main__":
    main()
