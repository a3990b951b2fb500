"""Sweeps on a Ray cluster (the ``ray`` extra): each run is Ray work on a worker (an actor
holding one GPU, or one CPU where the cluster has none) that keeps its models loaded across
runs as the local sweep does; the row and the PNG's bytes come back to the driver, which
writes them into the out folder (no shared file system needed). A worker that is lost
(killed, its node gone) is replaced and its run goes to another worker.

Ray: https://docs.ray.io/en/latest/ray-core/actors.html (actors, resources) and
.../ray-core/fault_tolerance/actors.html (a dead actor's calls raise RayActorError)."""
from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import deque
from pathlib import Path

from ..core.device import resolve_device
from ..core.errors import BadInput, MissingPackage
from ..pipeline import Models
from .grid import flatten
from .metrics import as_clip
from .rows import run_row

MAX_TRIES = 3  # a run whose worker was lost this many times becomes a failed row


class Worker:
    """One Ray worker of a sweep: its models (loaded once, kept across runs) and CLIP."""

    def __init__(self, device: str, clip: str | None, offline, repeats: int, warmup: bool,
                 threads: int | None = None):
        if threads:  # torch's CPU arithmetic depends on its thread count: the driver's
            import torch

            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.models = Models(self.device, offline=offline)
        self.scorer = as_clip(clip, device=self.device, offline=offline)
        self.repeats, self.warmup = repeats, warmup

    def run(self, d: dict, rid: str) -> tuple[dict, bytes | None]:
        """The run's row and its PNG's bytes (None when it made no image)."""
        with tempfile.TemporaryDirectory(prefix="pegu-ray-") as tmp:
            image = Path(tmp) / f"{rid}.png"
            row = run_row(d, self.models, image, self.scorer, self.repeats, self.warmup,
                          False)
            data = image.read_bytes() if image.is_file() else None
        row["process"] = f"ray:{os.uname().nodename}:{os.getpid()}"
        return row, data


def _ray():
    try:
        import ray
    except ImportError:
        raise MissingPackage("--cluster ray needs Ray: pip install 'pegu[ray]' (or pip "
                             "install ray) here and on the cluster's nodes") from None
    return ray


def connect(cluster: str) -> bool:
    """Join the Ray cluster ``cluster`` names: "ray" (``$RAY_ADDRESS`` when set, else a new
    local cluster of this machine), "auto" (the cluster this machine is part of), or an
    address ("ray://HEAD:10001", "HEAD:6379"). pegu's own code is shipped to the workers
    (``runtime_env py_modules``), so their pegu is the driver's; its dependencies (torch,
    diffusers) must be installed on the nodes. Returns whether this call started Ray
    (and so should shut it down). An already initialised Ray is used as it is."""
    ray = _ray()
    if ray.is_initialized():
        return False
    if not isinstance(cluster, str) or not cluster:
        raise BadInput(f"cluster is 'ray', 'auto' or a Ray address, got {cluster!r}")
    address = None if cluster == "ray" else cluster
    package = Path(__file__).resolve().parents[1]  # pegu/
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, configure_logging=True,
             runtime_env={"py_modules": [str(package)]}
             if address else None)
    return True


def _resources(ray) -> tuple[dict, int]:
    """(each worker's Ray resources, how many workers fit): one GPU each where the cluster
    has GPUs, else one CPU each."""
    total = ray.cluster_resources()
    gpus = int(total.get("GPU", 0))
    if gpus:
        return {"num_gpus": 1, "num_cpus": 1}, gpus
    return {"num_cpus": 1}, max(1, int(total.get("CPU", 1)))


def cluster_runs(todo: list[tuple[int, dict]], run_ids: list[str], *, cluster: str,
                 workers: int | None, device: str, clip: str | None, offline,
                 repeats: int, warmup: bool, deadline: float | None, on_row) -> None:
    """Run ``todo`` ([(index, settings dict)], ``run_ids`` beside it) on the Ray cluster,
    calling ``on_row(index, rid, row, png bytes or None)`` in the driver as each ends.
    Runs of one model go to the same worker while it has them (its models stay loaded).
    workers: how many (default: one per GPU of the cluster, else per CPU)."""
    ray = _ray()
    started = connect(cluster)
    try:
        resources, fit = _resources(ray)
        n = max(1, min(workers or fit, len(todo)))
        remote = ray.remote(max_restarts=0, max_concurrency=1, **resources)(Worker)
        dev = device if device != "auto" else ("cuda" if "num_gpus" in resources else "cpu")

        # CPU workers compute with as many threads as this process would (Ray gives a
        # 1-CPU actor one thread), so that their pixels are the local sweep's exactly
        threads = None
        if dev == "cpu":
            import torch

            threads = torch.get_num_threads()

        def new_worker():
            return remote.remote(dev, clip, offline, repeats, warmup, threads)

        queues: dict[str, deque] = {}
        for (i, d), rid in zip(todo, run_ids):
            queues.setdefault(str(d.get("model")), deque()).append((i, d, rid))
        tries: dict[str, int] = {}
        idle = [new_worker() for _ in range(n)]
        last_model: dict[int, str] = {}
        busy: dict = {}  # ObjectRef -> (worker, (i, d, rid), model)
        took: list[float] = []

        def next_for(worker):
            model = last_model.get(id(worker))
            if model in queues and queues[model]:
                return model, queues[model].popleft()
            left = [m for m in queues if queues[m]]
            if not left:
                return None, None
            model = max(left, key=lambda m: len(queues[m]))
            return model, queues[model].popleft()

        def dispatch():
            while idle:
                if deadline and time.time() + max(took, default=0) > deadline:
                    return
                worker = idle.pop()
                model, job = next_for(worker)
                if job is None:
                    idle.append(worker)
                    return
                last_model[id(worker)] = model
                busy[worker.run.remote(job[1], job[2])] = (worker, job, model, time.time())

        dispatch()
        while busy:
            ready, _ = ray.wait(list(busy), num_returns=1)
            worker, (i, d, rid), model, t0 = busy.pop(ready[0])
            try:
                row, data = ray.get(ready[0])
            except ray.exceptions.RayActorError as e:  # the worker is gone: replace it
                tries[rid] = tries.get(rid, 0) + 1
                if tries[rid] < MAX_TRIES:
                    queues.setdefault(model, deque()).appendleft((i, d, rid))
                else:
                    on_row(i, rid, _lost(d, e), None)
                idle.append(new_worker())
                dispatch()
                continue
            took.append(time.time() - t0)
            on_row(i, rid, row, data)
            idle.append(worker)
            dispatch()
    finally:
        if started:
            ray.shutdown()


def _lost(d: dict, error) -> dict:
    return {**flatten(d), "status": "error",
            "error": f"lost its Ray worker {MAX_TRIES} times ({type(error).__name__}); run "
                     "the sweep again to retry it"}
