"""The CLI's shared options (--model, --device, --steps, --seed) have one declaration and one help text.

Each is declared in kneuron/cli/options.py only; every command that takes one shows the same help
(--model adds RUN_MODEL_NOTE where it defaults to a discovery run's model).  `--threads` belongs
to the root command alone.  Comma-separated list options are all read by `split_list`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import typer

import kneuron.cli as cli
from kneuron.cli import main
from kneuron.cli.options import DEVICE_HELP, MODEL_HELP, RUN_MODEL_NOTE, SEED_HELP, STEPS_HELP, split_list

CLI_DIR = Path(cli.__file__).parent
SHARED = {"model": ["--model", "-m"], "device": ["--device"], "seed": ["--seed"], "steps": ["--steps"]}


def _walk(command, path=()):
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from _walk(sub, (*path, name))


@pytest.fixture(scope="module")
def commands():
    cli._register()
    return list(_walk(typer.main.get_command(cli.app)))


def _shared_params(commands):
    """{option name: {help text: [commands]}} over every command (and group) of the app."""
    found = defaultdict(lambda: defaultdict(list))
    for path, command in commands:
        for param in command.params:
            if param.name in SHARED:
                found[param.name][param.help].append(" ".join(path) or "kneuron")
    return found


def test_walk_reaches_nested_commands(commands):
    names = {" ".join(path) for path, _ in commands}
    assert {"discover", "neurons", "edit update", "edit bench", "data counterfact", "world build"} <= names


def test_one_help_text_per_shared_option(commands):
    found = _shared_params(commands)
    assert set(found) == set(SHARED)
    expected = {"device": {DEVICE_HELP}, "steps": {f"{STEPS_HELP} Range: >= 1."},
                "seed": {f"{SEED_HELP} Range: [0, {2**32 - 1}]."}}
    for name, helps in expected.items():
        assert set(found[name]) == helps, f"--{name} has several help texts: {dict(found[name])}"
    # --model: one text, plus the documented note where the default is the run's model.
    assert set(found["model"]) <= {MODEL_HELP, MODEL_HELP + RUN_MODEL_NOTE}, dict(found["model"])
    assert sorted(found["model"][MODEL_HELP + RUN_MODEL_NOTE]) == ["edit erase", "edit update", "explore"]
    assert sum(len(v) for v in found["model"].values()) >= 15  # every command that loads a model


def test_shared_options_keep_their_flags(commands):
    for path, command in commands:
        for param in command.params:
            if param.name in SHARED:
                assert sorted(param.opts) == sorted(SHARED[param.name]), (" ".join(path), param.name, param.opts)


def test_threads_only_on_the_root(commands):
    with_threads = [" ".join(path) or "kneuron" for path, command in commands
                    if any(p.name == "threads" for p in command.params)]
    assert with_threads == ["kneuron"]


def test_model_help_names_every_builtin_world():
    from kneuron.world import BUILTIN_MODELS

    for name in BUILTIN_MODELS:
        assert f"{name}," in MODEL_HELP or f"{name})" in MODEL_HELP, name


@pytest.mark.parametrize("flag, owner", [('"--model"', "options.py"), ('"--device"', "options.py"),
                                         ('"--steps"', "options.py"), ('"--seed"', "options.py"),
                                         ('"--threads"', "__init__.py")])
def test_shared_option_declared_in_one_file(flag, owner):
    files = sorted(p.name for p in CLI_DIR.glob("*.py") if flag in p.read_text(encoding="utf-8"))
    assert files == [owner], f"{flag} is declared in {files}; use kneuron.cli.options"


def test_no_hand_written_comma_split():
    files = sorted(p.name for p in CLI_DIR.glob("*.py")
                   if 'split(",")' in p.read_text(encoding="utf-8") and p.name != "options.py")
    assert files == [], f"use kneuron.cli.options.split_list in {files}"


@pytest.mark.parametrize("text, expected", [
    (" a, ,b ,", ["a", "b"]),
    ("P19", ["P19"]),
    ("P19,P36", ["P19", "P36"]),
    (" x y , z", ["x y", "z"]),
    ("", None),  # nothing listed: None, the same as the option not given
    (" , ,", None),
    (None, None),
])
def test_split_list(text, expected):
    assert split_list(text) == expected


def test_seed_range_checked_everywhere(tmp_path, capsys):
    # compare --seed used to take any integer; the shared option refuses a negative one before any work.
    assert main(["compare", "--out", str(tmp_path / "c"), "--seed", "-1"]) != 0
    err = capsys.readouterr().err
    assert "--seed" in err and "-1" in err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("argv", [["--help"], ["discover", "--help"], ["edit", "update", "--help"]])
def test_help_renders(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Usage" in out
    if argv != ["--help"]:
        assert "--model" in out and "--device" in out and "Hub name" in out
