"""scripts/check_paths.py: what counts as an absolute machine path, and what is allowed."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_paths", ROOT / "scripts" / "check_paths.py")
check_paths = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_paths)


def found(line: str) -> list[str]:
    return [m.group(0) for pattern in check_paths.PATTERNS for m in pattern.finditer(line)]


def test_machine_paths_are_found():
    root, user = "/" + "root", "/" + "home"
    assert found(f'run = "{root}/.cache/kneuron/world"') == [f"{root}/.cache/kneuron/world"]
    assert found(f"results in {user}/ann/runs/demo/ (run/)") == [f"{user}/ann/runs/demo/"]
    assert found(f"open file://{user}/ann/page.html") == [f"file://{user}/ann/page.html"]
    windows = "C:" + "\\Users\\ann\\runs"
    assert found(windows) == [windows]


def test_other_paths_are_not_machine_paths():
    tmp = "/" + "tmp"
    assert found(f"https://example.org{tmp}/x and https://example.org/home/x") == []
    assert found(f"~{tmp}/x, ./{tmp}/x, a{tmp}/x, /usr/bin/chromium, /etc/hosts, raw/patterns/P19.jsonl") == []


def test_placeholders_and_allowlist():
    assert check_paths.allowed("docs/development.md", "/" + "work/...")
    assert check_paths.allowed("scripts/check_paths.py", "/" + "tmp/real/smollm2-135m")  # None: any path
    assert not check_paths.allowed("tests/test_real_decoders.py", "/" + "tmp/real")
    assert not check_paths.allowed("tests/test_causal_replay.py", "/" + "tmp/real/smollm2-135m")
    assert not check_paths.allowed("results/demo/demo.log", "/" + "work/runs/demo")
