"""Numeric settings outside their range: one line naming the option and the value, before any work."""

import pytest
import torch

from kneuron.cli import main
from kneuron.errors import KneuronError
from kneuron.neurons import Neuron
from kneuron.ranges import FRACTION, NON_NEGATIVE, POSITIVE, SEED, Range
from kneuron.selection import coarse_neurons, refine


@pytest.mark.parametrize("args,message", [
    (["attribute", "x [MASK]", "y", "--threshold", "7"], "--threshold must be in (0, 1], got 7.0"),
    (["attribute", "x [MASK]", "y", "--threshold", "0"], "--threshold must be in (0, 1], got 0.0"),
    (["attribute", "x [MASK]", "y", "--steps", "0"], "--steps must be an integer >= 1, got 0"),
    (["attribute", "x [MASK]", "y", "--top", "-3"], "--top must be an integer >= 1, got -3"),
    (["neurons", "y", "a [MASK]", "-p", "1.5"], "-p must be in (0, 1], got 1.5"),
    (["neurons", "y", "a [MASK]", "--factor", "-1"], "--factor must be >= 0, got -1.0"),
    (["neurons", "y", "a [MASK]", "--factor", "nan"], "--factor must be >= 0, got nan"),
    (["neurons", "y", "a [MASK]", "--min-prompts", "0"], "--min-prompts must be an integer >= 1, got 0"),
    (["neurons", "y", "a [MASK]", "--seed", "-1"], "--seed must be an integer in [0, 4294967295], got -1"),
    (["predict", "x [MASK]", "-k", "0"], "-k must be an integer >= 1, got 0"),
    (["discover", "--out", "OUT", "--limit-facts", "0"], "--limit-facts must be an integer >= 1, got 0"),
    (["discover", "--out", "OUT", "--workers", "0"], "--workers must be an integer >= 1, got 0"),
    (["discover", "--out", "OUT", "--facts-per-batch", "0"], "--facts-per-batch must be an integer >= 1, got 0"),
    (["discover", "--out", "OUT", "--gpus-per-worker", "-0.5"], "--gpus-per-worker must be >= 0, got -0.5"),
    (["reproduce", "--out", "OUT", "--limit-facts", "0"], "--limit-facts must be an integer >= 1, got 0"),
    (["reproduce", "--out", "OUT", "--share", "2"], "--share must be in (0, 1], got 2.0"),
    (["experiment", "update", "RUN", "--lambda2", "-8"], "--lambda2 must be >= 0, got -8.0"),
    (["experiment", "update", "RUN", "--max-tries", "0"], "--max-tries must be an integer >= 1, got 0"),
    (["edit", "erase", "--run", "RUN", "--relation", "P19", "--out", "a.kedit", "--top-k", "0"],
     "--top-k must be an integer >= 1, got 0"),
    (["edit", "erase", "--run", "RUN", "--relation", "P19", "--out", "a.kedit", "--max-prompts", "0"],
     "--max-prompts must be an integer >= 1, got 0"),
    (["edit", "update", "--to", "x", "--out", "a.kedit", "--share", "0"], "--share must be in (0, 1], got 0.0"),
    (["demo", "--limit-facts", "0"], "--limit-facts must be an integer >= 1, got 0"),
    (["world", "build", "--seed", "-2"], "--seed must be an integer in [0, 4294967295], got -2"),
    (["--threads", "0", "predict", "x [MASK]"], "--threads must be an integer >= 1, got 0"),
])
def test_out_of_range_option_is_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written; a run that started would write here
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_unparsable_value_is_one_line_too(capsys):
    assert main(["attribute", "x [MASK]", "y", "--steps", "abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'--steps'" in err and err.startswith("error: ")


def test_ranges_describe_and_check():
    assert (FRACTION.describe(), POSITIVE.describe(), NON_NEGATIVE.describe()) == ("(0, 1]", ">= 1", ">= 0")
    assert SEED.describe() == "[0, 4294967295]" and Range(0, 1, high_open=True).describe() == "[0, 1)"
    assert FRACTION.check("p", 1.0) == 1.0 and FRACTION.check("p", None) is None
    for bad in (0, 1.0000001, float("inf"), float("nan"), True, "0.5"):
        with pytest.raises(KneuronError, match="p must be"):
            FRACTION.check("p", bad)
    with pytest.raises(KneuronError, match="must be an integer >= 1, got 2.5"):
        POSITIVE.check("steps", 2.5)


def test_api_refuses_thresholds_that_select_nothing():
    scores = torch.tensor([[1.0, 0.5], [0.1, 0.9]])
    assert coarse_neurons(scores, 1.0) == [Neuron(0, 0)]
    with pytest.raises(KneuronError, match=r"threshold must be in \(0, 1\], got 7"):
        coarse_neurons(scores, 7)
    with pytest.raises(KneuronError, match=r"p must be in \(0, 1\], got 1.5"):
        refine([[Neuron(0, 0)]] * 3, p=1.5)
    with pytest.raises(KneuronError, match="min_prompts must be an integer >= 1, got 0"):
        refine([[Neuron(0, 0)]] * 3, min_prompts=0)
