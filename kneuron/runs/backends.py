"""Where a discovery run does its attribution: in this process, or on the workers of a Ray cluster.

Both backends turn batches of fact indices into fact records with the same function
(`kneuron.runs.fact_records.attribute_facts`) and hand every record to the driver, whose `FactLog`
is the run directory's only writer.  So the run directory, its resumption and its final table are
the same whichever backend computed the records.

- `LocalBackend`: the batches in order, in this process (the default).
- `RayBackend`: the batches spread over Ray actors ("workers"), each loading the model once, on a
  local cluster started for the run (`ray.init(num_cpus=...)`) or an existing one (`address`).
  A worker that dies (killed, out of memory, node lost) is replaced and its unfinished batches
  are resubmitted; a batch is tried at most `max_attempts` times.  Results are logged by the
  driver as they arrive, and a fact already in the log is never written again, so nothing is
  lost or duplicated, and a killed driver resumes like a local run.

Ray is optional (`pip install 'kneuron[ray]'`); without it only `RayBackend` fails, with a
one-line error saying how to install it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch

from kneuron.errors import KneuronError
from kneuron.runs import fact_records  # looked up at call time, so tests can wrap it

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

RAY_INSTALL_HINT = "install it with: pip install 'kneuron[ray]'  (or: pip install 'ray>=2.9')"
BACKENDS = ("local", "ray")

Emit = Callable[[dict], None]
Advance = Callable[[int], None]


def _slow_facts_for_tests() -> float:
    return float(os.environ.get("KNEURON_SLOW_FACTS_FOR_TESTS", "0"))


def import_ray():
    """The `ray` module, or a one-line KneuronError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise KneuronError(f"the ray backend needs Ray, which is not installed; {RAY_INSTALL_HINT}") from None
    return ray


@contextmanager
def torch_settings(threads: int | None = None, tf32: bool | None = None):
    """Set torch's intra-op threads and TF32 matmuls for a block; restore them afterwards.

    TF32 (`torch.backends.cuda.matmul.allow_tf32`) only affects CUDA matmuls on Ampere or newer
    GPUs; on CPU and MPS it changes nothing.
    """
    old_threads = torch.get_num_threads()
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    old_cudnn = torch.backends.cudnn.allow_tf32
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        if tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
            torch.backends.cudnn.allow_tf32 = bool(tf32)
        yield
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
        if tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = old_tf32
            torch.backends.cudnn.allow_tf32 = old_cudnn


def batches(todo: Sequence[int], size: int) -> list[list[int]]:
    size = max(1, int(size))
    return [list(todo[s:s + size]) for s in range(0, len(todo), size)]


def _prompts(facts, batch) -> int:
    return sum(len(facts.facts[i].prompts) for i in batch)


class LocalBackend:
    """Attribution in this process, batch after batch."""

    name = "local"

    def __init__(self, kn: KnowledgeModel | None = None, device="auto", threads: int | None = None):
        self.kn, self.device, self.threads = kn, device, threads

    def run(self, facts, todo: Sequence[int], config, emit: Emit, advance: Advance, facts_per_batch: int = 8):
        if not todo:
            return
        kn = self.kn
        if kn is None:
            import kneuron

            kn = self.kn = kneuron.load(config.model, device=self.device)
        pause = _slow_facts_for_tests()  # lets tests kill a run mid-way
        with torch_settings(self.threads, getattr(config, "tf32", None)):
            for batch in batches(todo, facts_per_batch):
                for rec in fact_records.attribute_facts(kn, facts, batch, config):
                    emit(rec)
                    time.sleep(pause)
                advance(_prompts(facts, batch))


class _Worker:
    """A Ray actor: loads the model once, then turns batches of facts into records."""

    def __init__(self, model: str, device: str, threads: int, tf32: bool, memory_fraction: float | None):
        self.error = None
        self.kn = None
        try:
            torch.set_num_threads(max(1, int(threads)))
            torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
            torch.backends.cudnn.allow_tf32 = bool(tf32)
            if memory_fraction is not None and "KNEURON_MEMORY_FRACTION" not in os.environ:
                os.environ["KNEURON_MEMORY_FRACTION"] = f"{memory_fraction:.4f}"
            import kneuron

            self.kn = kneuron.load(model, device=device)
        except Exception as exc:  # reported by info(), so that the driver can say what went wrong
            first = str(exc).strip().splitlines()
            self.error = f"{type(exc).__name__}: {first[0] if first else ''}"

    def info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "error": self.error,
                "device": None if self.kn is None else str(self.kn.device), "threads": torch.get_num_threads()}

    def attribute(self, items: list, config, pause: float = 0.0) -> tuple[int, list[dict]]:
        if self.kn is None:
            raise KneuronError(f"worker could not load the model: {self.error}")
        view = SimpleNamespace(facts=dict(items))
        records = fact_records.attribute_facts(self.kn, view, [i for i, _ in items], config)
        if pause:
            time.sleep(pause * len(records))
        return os.getpid(), records


# Errors that mean "the worker (or its node) is gone", not "the work is wrong": resubmit.
_LOST = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "OutOfMemoryError",
         "NodeDiedError", "ObjectLostError", "OwnerDiedError", "ObjectReconstructionFailedError")


def _is_lost(exc: BaseException) -> bool:
    return any(cls.__name__ in _LOST for cls in type(exc).__mro__)


class RayBackend:
    """Attribution on Ray workers; see the module docstring.

    - `address`: an existing cluster ("auto", "ray://host:10001", "host:6379"); None starts a
      local cluster for the run (or uses `$RAY_ADDRESS`, or the cluster this process is already
      connected to).
    - `workers`: number of actors; default: as many as the cluster has room for (one per GPU on
      GPU clusters, else cluster CPUs / `threads_per_worker`).
    - `threads_per_worker`: torch threads (and CPUs reserved) per worker; 1 by default, which is
      fastest for small models (several OpenMP threads per process on a busy machine slow small
      ops down badly).
    - `gpus_per_worker`: GPUs reserved per worker; default 1 when the cluster has GPUs and the
      device is "auto" or CUDA, else 0.  Fractions share a GPU; the memory fraction each worker
      sizes its batches with is scaled down accordingly.
    - `device`: what each worker passes to `kneuron.load` ("auto": its GPU if it has one).
    - `num_cpus`: CPUs of a local cluster started for the run (default: workers x threads, or all).
    - `in_flight`: batches queued per worker (2 keeps a worker busy while results travel).
    - `max_attempts`: how often a batch is tried before the run stops (records so far are kept).
    - `keep_workers`: keep the workers (and their loaded model) after a run, for the next run of
      the same model; `close()` (or leaving a `with RayBackend(...)` block) releases them.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, threads_per_worker: int = 1,
                 gpus_per_worker: float | None = None, device: str = "auto", num_cpus: int | None = None,
                 in_flight: int = 2, max_attempts: int = 3, startup_timeout: float = 900.0,
                 keep_workers: bool = False, init_kwargs: dict | None = None):
        import_ray()  # fail before any work when Ray is missing
        if workers is not None and workers < 1:
            raise KneuronError(f"--workers must be >= 1, got {workers}")
        if threads_per_worker < 1:
            raise KneuronError(f"threads per worker must be >= 1, got {threads_per_worker}")
        if gpus_per_worker is not None and gpus_per_worker < 0:
            raise KneuronError(f"GPUs per worker must be >= 0, got {gpus_per_worker}")
        self.address, self.workers, self.threads = address, workers, int(threads_per_worker)
        self.gpus_per_worker, self.device, self.num_cpus = gpus_per_worker, str(device), num_cpus
        self.in_flight, self.max_attempts = max(1, int(in_flight)), max(1, int(max_attempts))
        self.startup_timeout, self.keep_workers = startup_timeout, keep_workers
        self.init_kwargs = dict(init_kwargs or {})
        self.worker_pids: list[int | None] = []  # current pid of each worker slot (tests kill them)
        self.worker_info: list[dict] = []
        self.stats = {"workers_started": 0, "worker_failures": 0, "resubmitted_batches": 0}
        self._local = address is None
        self._started_cluster = False
        self._actors: list = []
        self._pool_key = None
        self._start = None

    def __enter__(self) -> RayBackend:
        self.keep_workers = True
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    # -- cluster ----------------------------------------------------------------------------------
    def _connect(self, ray) -> None:
        """Connect to (or start) a cluster, unless this process is connected already."""
        if ray.is_initialized():
            return
        self._local = self.address is None and not os.environ.get("RAY_ADDRESS")
        options = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
        options.update(self.init_kwargs)
        if self._local:
            num_cpus = self.num_cpus
            if num_cpus is None and self.workers is not None:
                num_cpus = self.workers * self.threads
            ray.init(num_cpus=num_cpus, **options)
        else:
            options.pop("include_dashboard", None)
            try:
                ray.init(address=self.address, **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or os.environ.get("RAY_ADDRESS")
                raise KneuronError(f"cannot connect to the Ray cluster at {where!r}: {str(exc).splitlines()[0]}") \
                    from None
        self._started_cluster = True

    def _plan(self, ray, n_batches: int) -> tuple[int, float]:
        """(workers, GPUs per worker) for this cluster."""
        total = ray.cluster_resources()
        cluster_gpus, cluster_cpus = float(total.get("GPU", 0)), float(total.get("CPU", 0))
        gpus = self.gpus_per_worker
        wants_cuda = self.device.startswith("cuda")
        if gpus is None:
            gpus = 1.0 if cluster_gpus > 0 and (self.device == "auto" or wants_cuda) else 0.0
        if wants_cuda and (gpus == 0 or cluster_gpus == 0):
            raise KneuronError(f"--device {self.device} on the ray backend needs GPUs in the cluster "
                               f"(it has {cluster_gpus:g}) and GPUs per worker > 0")
        room = math.floor(cluster_gpus / gpus + 1e-9) if gpus > 0 else math.floor(cluster_cpus / self.threads)
        n = self.workers if self.workers is not None else max(1, room)
        if n > room and self._local:
            need = f"{n * gpus:g} GPUs" if gpus > 0 else f"{n * self.threads} CPUs"
            raise KneuronError(f"{n} workers need {need}; the Ray cluster has {cluster_gpus:g} GPUs and "
                               f"{cluster_cpus:g} CPUs (lower --workers or --worker-threads)")
        if not self.keep_workers:
            n = min(n, n_batches)  # no idle workers loading a model for nothing
        return max(1, n), gpus

    def _worker_model(self, model: str) -> str:
        from kneuron.models.sources import resolve_model

        if self._local:  # build, fetch or convert it once here, not once per worker
            return resolve_model(model)
        return model

    def _kill_actors(self) -> None:
        ray = sys.modules.get("ray")
        for a in self._actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        self._actors, self._pool_key, self._start = [], None, None

    def close(self) -> None:
        """Release the workers, and the local cluster if this backend started it."""
        ray = sys.modules.get("ray")
        if ray is None:
            return
        self._kill_actors()
        if self._started_cluster and ray.is_initialized():
            ray.shutdown()
        self._started_cluster = False

    def _ensure_workers(self, ray, config, n_batches: int) -> None:
        n_workers, gpus = self._plan(ray, n_batches)
        model = self._worker_model(config.model)
        tf32 = bool(getattr(config, "tf32", False))
        fraction = 0.7 * min(1.0, gpus) if gpus > 0 else 0.7 * min(1.0, self.threads / (os.cpu_count() or 1))
        key = (model, self.device, self.threads, gpus, tf32, round(fraction, 4))
        if self._actors and key == self._pool_key and all(p is not None for p in self.worker_pids):
            return  # the kept workers already hold this model
        self._kill_actors()
        actor_cls = ray.remote(num_cpus=self.threads, num_gpus=gpus, max_restarts=0, max_task_retries=0,
                               concurrency_groups={"control": 1})(_Worker)

        def start():
            self.stats["workers_started"] += 1
            return actor_cls.remote(model, self.device, self.threads, tf32, fraction)

        self._start, self._pool_key = start, key
        self._actors = [start() for _ in range(n_workers)]
        refs = [a.info.options(concurrency_group="control").remote() for a in self._actors]
        try:
            infos = ray.get(refs, timeout=self.startup_timeout)
        except ray.exceptions.GetTimeoutError:
            self._kill_actors()
            raise KneuronError(f"Ray workers did not start within {self.startup_timeout:.0f} s "
                               "(not enough free CPUs/GPUs in the cluster?)") from None
        bad = [i for i in infos if i["error"]]
        if bad:
            self._kill_actors()
            raise KneuronError(f"Ray worker on {bad[0]['host']} could not load the model: {bad[0]['error']}")
        self.worker_info = infos
        self.worker_pids = [i["pid"] for i in infos]

    # -- run --------------------------------------------------------------------------------------
    def run(self, facts, todo: Sequence[int], config, emit: Emit, advance: Advance, facts_per_batch: int = 8):
        if not todo:
            return
        ray = import_ray()
        self._connect(ray)
        try:
            queue = deque(batches(todo, facts_per_batch))
            self._ensure_workers(ray, config, len(queue))
            self._schedule(ray, facts, config, queue, emit, advance)
        finally:
            if not self.keep_workers:
                self.close()

    def _schedule(self, ray, facts, config, queue: deque, emit: Emit, advance: Advance):
        actors = self._actors
        pause = _slow_facts_for_tests()
        pending: dict = {}  # ref -> (slot, generation, batch)
        load = [0] * len(actors)
        generation = [0] * len(actors)
        attempts: dict[tuple, int] = {}

        def fill(slot: int) -> None:
            while queue and load[slot] < self.in_flight:
                batch = queue.popleft()
                items = [(i, facts.facts[i]) for i in batch]
                ref = actors[slot].attribute.remote(items, config, pause)
                pending[ref] = (slot, generation[slot], batch)
                load[slot] += 1

        for slot in range(len(actors)):
            fill(slot)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                slot, gen, batch = pending.pop(ref)
                if gen == generation[slot]:
                    load[slot] -= 1
                try:
                    pid, records = ray.get(ref)
                except Exception as exc:
                    if not _is_lost(exc):
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, KneuronError):
                            raise cause from None
                        raise
                    key = tuple(batch)
                    attempts[key] = attempts.get(key, 1) + 1
                    if attempts[key] > self.max_attempts:
                        raise KneuronError(
                            f"facts {batch[0]}..{batch[-1]} failed on {self.max_attempts} Ray workers in a row "
                            f"(last: {type(exc).__name__}); finished facts are kept, rerun to resume") from None
                    self.stats["resubmitted_batches"] += 1
                    queue.appendleft(batch)
                    if gen == generation[slot]:  # first news of this worker's death: replace it
                        self.stats["worker_failures"] += 1
                        try:
                            ray.kill(actors[slot], no_restart=True)
                        except Exception:
                            pass
                        actors[slot] = self._start()
                        generation[slot] += 1
                        load[slot] = 0
                        self.worker_pids[slot] = None
                else:
                    if gen == generation[slot]:
                        self.worker_pids[slot] = pid
                    for rec in records:
                        emit(rec)
                    advance(_prompts(facts, batch))
                for s in range(len(actors)):
                    fill(s)


def make_backend(name: str | None = "local", kn: KnowledgeModel | None = None, **options):
    """A backend by name: "local" (options: device, threads) or "ray" (see `RayBackend`)."""
    name = (name or "local").lower()
    if name == "local":
        return LocalBackend(kn, **{k: v for k, v in options.items() if k in ("device", "threads")})
    if name == "ray":
        return RayBackend(**options)
    raise KneuronError(f"unknown backend {name!r}; use one of: {', '.join(BACKENDS)}")
