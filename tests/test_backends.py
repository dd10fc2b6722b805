"""Discovery backends: local and Ray give the same run directory; a killed Ray worker loses nothing;
an interrupted driver resumes; without Ray the ray backend says how to install it."""

import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time

import pandas as pd
import pytest
import torch
from tiny_facts import N_FACTS

import kneuron
from kneuron.cli import main
from kneuron.data import load_facts_jsonl
from kneuron.errors import KneuronError
from kneuron.runs import DiscoveryConfig, discover
from kneuron.runs import backends as backends_module
from kneuron.runs import fact_records as discover_module
from kneuron.runs.backends import LocalBackend, RayBackend, make_backend, torch_settings
from kneuron.runs.store import FactLog


def _have_ray() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["ray"] is None (blocked)
        return False


HAVE_RAY = _have_ray()
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'kneuron[ray]')")


def config_for(setup, **kw):
    _, model_dir, path = setup
    return DiscoveryConfig(model=str(model_dir), data=str(path), **kw)


@pytest.fixture(scope="module")
def local_run(setup, tmp_path_factory):
    """The reference: a local run (table, records by fact)."""
    _, model_dir, path = setup
    out = tmp_path_factory.mktemp("local") / "run"
    kn = kneuron.load(str(model_dir), device="cpu")
    res = discover(kn, load_facts_jsonl(path), out, config_for(setup), progress=False, facts_per_batch=2)
    return res.neurons, FactLog(out / "attributions.jsonl").records


def log_facts(run_dir) -> list[int]:
    return [json.loads(x)["fact"] for x in (run_dir / "attributions.jsonl").read_text().splitlines()]


# -- without Ray, and the local backend -------------------------------------------------------------

def test_without_ray_the_ray_backend_says_how_to_install(setup, tmp_path, monkeypatch, capsys):
    _, model_dir, path = setup
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(KneuronError, match=r"pip install 'kneuron\[ray\]'"):
        RayBackend()
    with pytest.raises(KneuronError, match="not installed"):
        make_backend("ray")
    code = main(["discover", "--model", str(model_dir), "--data", str(path), "--out", str(tmp_path / "r"),
                 "--no-progress", "--device", "cpu", "--backend", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and "kneuron[ray]" in err and len(err.strip().splitlines()) <= 2  # one line (maybe wrapped)
    # ... and the local backend works.
    code = main(["discover", "--model", str(model_dir), "--data", str(path), "--out", str(tmp_path / "l"),
                 "--no-progress", "--device", "cpu", "--limit-facts", "1"])
    assert code == 0 and (tmp_path / "l" / "neurons.parquet").exists()


def test_backend_options_are_checked(setup, tmp_path, capsys):
    _, model_dir, path = setup
    base = ["discover", "--model", str(model_dir), "--data", str(path), "--out", str(tmp_path / "x"),
            "--no-progress", "--device", "cpu"]
    assert main(base + ["--backend", "spark"]) == 2
    assert "unknown --backend" in capsys.readouterr().err
    assert main(base + ["--workers", "2"]) == 2
    assert "only apply to --backend ray" in capsys.readouterr().err
    with pytest.raises(KneuronError, match="unknown backend"):
        make_backend("spark")


def test_local_backend_object_and_lazy_model(setup, tmp_path, local_run):
    _, _, path = setup
    res = discover(None, load_facts_jsonl(path), tmp_path / "run", config_for(setup), progress=False,
                   backend=LocalBackend(device="cpu"))  # no model given: the backend loads config.model
    assert res.neurons.equals(local_run[0])


def test_tf32_setting(setup, tmp_path, monkeypatch):
    seen = []
    real = discover_module.attribute_facts

    def spy(*args, **kw):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.get_num_threads()))
        return real(*args, **kw)

    monkeypatch.setattr(discover_module, "attribute_facts", spy)
    before = torch.backends.cuda.matmul.allow_tf32
    _, model_dir, path = setup
    kn = kneuron.load(str(model_dir), device="cpu")
    cfg = config_for(setup, tf32=True, limit_facts=1)
    discover(kn, load_facts_jsonl(path), tmp_path / "run", cfg, progress=False, backend=LocalBackend(kn, threads=1))
    assert seen and all(flag is True and threads == 1 for flag, threads in seen)
    assert torch.backends.cuda.matmul.allow_tf32 == before  # restored
    assert json.loads((tmp_path / "run" / "config.json").read_text())["tf32"] is True
    with pytest.raises(KneuronError, match="tf32"):  # a resumed run must keep the setting
        discover(kn, load_facts_jsonl(path), tmp_path / "run", config_for(setup, limit_facts=1), progress=False)
    with torch_settings(tf32=True):
        assert torch.backends.cuda.matmul.allow_tf32 is True
    assert torch.backends.cuda.matmul.allow_tf32 == before


def test_config_written_before_tf32_existed_still_resumes(setup, tmp_path):
    _, model_dir, path = setup
    kn = kneuron.load(str(model_dir), device="cpu")
    cfg = config_for(setup, limit_facts=1)
    discover(kn, load_facts_jsonl(path), tmp_path / "run", cfg, progress=False)
    old = json.loads((tmp_path / "run" / "config.json").read_text())
    del old["tf32"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(old))
    res = discover(kn, load_facts_jsonl(path), tmp_path / "run", config_for(setup, limit_facts=1), progress=False)
    assert res.resumed_facts == 2


# -- Ray ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    """One local 2-CPU cluster for the module's Ray tests (the backend reuses a connected cluster)."""
    if not HAVE_RAY:
        pytest.skip("ray is not installed (pip install 'kneuron[ray]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_backend(ray_cluster):
    """Two workers kept between runs (their model stays loaded), released at the end of the module."""
    with RayBackend(workers=2) as backend:
        yield backend


def ray_run(setup, out, backend, **kw):
    _, _, path = setup
    return discover(None, load_facts_jsonl(path), out, config_for(setup, **kw), progress=False, facts_per_batch=2,
                    backend=backend)


@needs_ray
def test_ray_equals_local(setup, tmp_path, local_run, ray_cluster):
    """`kneuron discover --backend ray --workers 2` on the 2-CPU cluster: same records, same table."""
    _, model_dir, path = setup
    out = tmp_path / "ray"
    code = main(["discover", "--model", str(model_dir), "--data", str(path), "--out", str(out), "--no-progress",
                 "--device", "cpu", "--backend", "ray", "--workers", "2", "--facts-per-batch", "2"])
    assert code == 0
    table, records = local_run
    assert pd.read_parquet(out / "neurons.parquet").equals(table)
    assert sorted(log_facts(out)) == list(range(N_FACTS))
    assert FactLog(out / "attributions.jsonl").records == records  # same records, bit for bit
    # More workers than the cluster has CPUs for: refused at once instead of waiting forever.
    with pytest.raises(KneuronError, match="workers need"):
        ray_run(setup, tmp_path / "big", RayBackend(workers=5, threads_per_worker=1))


@needs_ray
def test_ray_driver_interrupted_then_resumed(setup, tmp_path, local_run, ray_backend, monkeypatch):
    real = FactLog.append
    count = {"n": 0}

    def interrupted(self, rec):
        if count["n"] == 3:
            raise KeyboardInterrupt  # the driver dies after writing three records
        count["n"] += 1
        real(self, rec)

    monkeypatch.setattr(FactLog, "append", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ray_run(setup, tmp_path / "run", ray_backend)
    assert len(log_facts(tmp_path / "run")) == 3
    monkeypatch.setattr(FactLog, "append", real)
    res = ray_run(setup, tmp_path / "run", ray_backend)  # the restarted driver (here: same workers)
    assert res.resumed_facts == 3
    assert sorted(log_facts(tmp_path / "run")) == list(range(N_FACTS))
    assert res.neurons.equals(local_run[0])


@needs_ray
def test_ray_killed_worker_loses_nothing(setup, tmp_path, local_run, ray_backend, monkeypatch):
    monkeypatch.setenv("KNEURON_SLOW_FACTS_FOR_TESTS", "0.3")  # passed to the workers: 0.6 s per batch
    backend = ray_backend
    before = dict(backend.stats)
    out = tmp_path / "ray"
    killed = []

    def kill_one_worker_mid_run():
        deadline = time.time() + 60
        log = out / "attributions.jsonl"
        while time.time() < deadline:
            if backend.worker_pids and log.exists() and len(log.read_text().splitlines()) >= 2:
                pid = backend.worker_pids[0]  # reported by the worker's info() remote method
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_worker_mid_run, daemon=True)
    killer.start()
    res = ray_run(setup, out, backend)
    killer.join()
    assert killed, "the worker was never killed"
    done = log_facts(out)
    assert sorted(done) == list(range(N_FACTS))  # each fact exactly once
    assert res.neurons.equals(local_run[0])
    assert backend.stats["worker_failures"] == before["worker_failures"] + 1
    assert backend.stats["resubmitted_batches"] > before["resubmitted_batches"]
    assert backend.stats["workers_started"] == before["workers_started"] + 1  # one replacement
    assert killed[0] not in backend.worker_pids
    assert len(backend.worker_info) == 2 and all(i["threads"] == 1 for i in backend.worker_info)
    assert os.getpid() not in backend.worker_pids


def test_worker_reports_a_model_it_cannot_load(setup, tmp_path):
    """The Ray actor class, run in this process: a load error is reported, not raised at creation."""
    _, model_dir, path = setup
    bad = backends_module._Worker(str(tmp_path / "nope"), "cpu", 1, False, None)
    assert "model directory not found" in bad.info()["error"]
    with pytest.raises(KneuronError, match="could not load the model"):
        bad.attribute([], config_for(setup))
    good = backends_module._Worker(str(model_dir), "cpu", 1, False, None)
    facts = load_facts_jsonl(path)
    pid, recs = good.attribute([(3, facts.facts[3]), (9, facts.facts[9])], config_for(setup))
    assert pid == os.getpid() and [r["fact"] for r in recs] == [3, 9] and "skipped" in recs[1]


def test_lost_errors_are_recognised():
    class ActorDiedError(Exception):
        pass

    assert backends_module._is_lost(ActorDiedError())
    assert not backends_module._is_lost(ValueError())
