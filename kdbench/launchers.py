"""Where a sweep's runs execute (``launcher.kind``): inline in this process, on ``launcher.workers`` local processes,
or as SLURM jobs. The last two go through submitit (Meta's job-submission library, used by DomainBed-style sweeps).

Every launcher hands out runs, not sweeps: the runs still to do are split into groups, each group runs
``run_sweep`` on its own, and every run keeps its own directory, identity and skip/resume logic. Re-launching a
sweep therefore skips finished runs and resumes interrupted ones, whatever launcher ran them before. Before
``local`` workers start, this process fills the pretraining cache once, so the workers only read it. Each ``local``
worker gets its own ``launcher.gpus_per_job`` GPUs (its ``CUDA_VISIBLE_DEVICES``), or none on CPU.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.config import Config
from kdbench.engine.trainer import TrainingError
from kdbench.errors import UserError
from kdbench.launch import Job, Workspace, fill_teacher_cache, run_dir, run_sweep
from kdbench.record import TEACHER
from kdbench.suite import Suite

Echo = Callable[[str], None]


@dataclass
class Dispatch:
    """What a launcher did: runs done, skipped and failed (when it waited for them) and job ids (when not)."""

    counts: dict[str, int]
    job_ids: list[str]
    waited: bool


@dataclass(frozen=True)
class Layout:
    """What ``launcher.kind=auto`` chose: the launcher, its workers, each worker's threads (0: as configured) and
    why, in words."""

    kind: str
    workers: int
    threads: int
    why: str


def auto_layout(pending: int, gpus: int, cores: int) -> Layout:
    """``launcher.kind=auto``: with GPUs, one worker per GPU (inline with one GPU); CPU only, one single-threaded
    worker process per core (up to the runs to do), the faster of the two layouts measured on the 2-core
    development machine (docs/performance.md, "Worker layout"); inline when there is one run to do."""
    if pending <= 1:
        return Layout("inline", 1, 0, "nothing to do" if pending == 0 else "one run to do")
    if gpus == 1:
        return Layout("inline", 1, 0, "one GPU")
    if gpus > 1:
        workers = min(gpus, pending)
        return Layout("local", workers, 0, f"one worker per GPU ({gpus} GPUs)")
    workers = min(cores, pending)
    if workers <= 1:
        return Layout("inline", 1, 0, "one CPU core")
    return Layout("local", workers, max(1, cores // workers), f"CPU only: one worker per core ({cores} cores)")


def resolve_auto(cfg: Config, pending: int) -> Layout:
    """Apply :func:`auto_layout` for this machine to ``cfg`` (kind, workers, and threads where unset)."""
    import torch

    gpus = 0 if cfg.device == "cpu" else torch.cuda.device_count()
    layout = auto_layout(pending, gpus, len(os.sched_getaffinity(0)))
    cfg.launcher.kind = layout.kind
    if layout.kind == "local":
        cfg.launcher.workers = layout.workers
        if cfg.train.threads == 0 and layout.threads:
            cfg.train.threads = layout.threads
    return layout


def run_group(jobs: list[Job], cfg: Config, suite: Suite, out: str) -> dict[str, int]:
    """A worker's share of a sweep (the function submitit runs in each job, once per task). With
    ``launcher.processes`` > 1 the job's tasks are one run's DDP processes: each joins the process group that
    submitit's job environment describes, as under torchrun, and rank 0 alone writes and prints."""
    from kdbench.engine.distributed import init_from_env
    from kdbench.engine.runtime import resolve_runtime

    if cfg.launcher.processes > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    runtime = resolve_runtime(cfg.device, cfg.train.amp, cfg.train.threads)
    info = init_from_env(runtime.device.type)
    if info.is_main:
        processes = f", {info.world} processes" if info.enabled else ""
        print(f"kdbench: worker on {runtime.device.type}{processes} "
              f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})", flush=True)
    echo = (lambda line: print(line, flush=True)) if info.is_main else (lambda line: None)
    return run_sweep(jobs, cfg, suite, runtime, Path(out), echo)


class RunGroup:
    """:func:`run_group` as submitit's checkpointable callable: when SLURM signals a preemption or the time limit
    (SIGUSR2), the run in training saves its state (``kdbench.engine.preemption``), then submitit calls
    :meth:`checkpoint` and requeues the job, which calls this again with the same runs; finished runs are
    skipped and the interrupted one goes on from its saved state."""

    def __call__(self, jobs: list[Job], cfg: Config, suite: Suite, out: str) -> dict[str, int]:
        return run_group(jobs, cfg, suite, out)

    def checkpoint(self, *args: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args)


def gpus_per_run(cfg: Config) -> int:
    """GPUs each job asks for: one per DDP process with ``launcher.processes`` > 1, else ``launcher.gpus_per_job``."""
    return cfg.launcher.processes if cfg.launcher.processes > 1 else cfg.launcher.gpus_per_job


def executor_parameters(cfg: Config) -> dict[str, Any]:
    """submitit ``update_parameters`` keywords for ``cfg.launcher`` (``cpus_per_job`` shared by its tasks)."""
    launcher = cfg.launcher
    params: dict[str, Any] = {"timeout_min": launcher.timeout_min, "tasks_per_node": launcher.processes,
                              "cpus_per_task": max(1, launcher.cpus_per_job // launcher.processes),
                              "mem_gb": launcher.mem_gb, "name": f"kdbench-{cfg.suite}"}
    if launcher.kind == "slurm":
        params.update(gpus_per_node=gpus_per_run(cfg), slurm_array_parallelism=launcher.array_parallelism)
        if launcher.partition:
            params["slurm_partition"] = launcher.partition
    return params


def groups_of(jobs: list[Job], cfg: Config, workers: int | None = None) -> list[list[Job]]:
    """``local``: round-robin over ``workers`` (``launcher.workers`` when not given); ``slurm``: one run per job."""
    if cfg.launcher.kind == "slurm":
        return [[job] for job in jobs]
    workers = min(cfg.launcher.workers if workers is None else workers, len(jobs))
    return [jobs[i::workers] for i in range(workers)]


def visible_gpus(count: int, cuda_visible_devices: str | None) -> list[int]:
    """Physical indices of the ``count`` GPUs this process sees, read through its ``CUDA_VISIBLE_DEVICES``."""
    if count <= 0:
        return []
    if cuda_visible_devices is None:
        return list(range(count))
    listed = [entry.strip() for entry in cuda_visible_devices.split(",")][:count]
    if not all(entry.isdigit() for entry in listed):
        raise UserError(f"launcher.kind=local hands out GPUs by index, but CUDA_VISIBLE_DEVICES="
                        f"{cuda_visible_devices} names them otherwise; list indices (e.g. 0,1) or use --device cpu")
    return [int(entry) for entry in listed]


def worker_gpus(workers: int, cfg: Config, visible: Sequence[int]) -> list[list[int]]:
    """The GPUs of each ``local`` worker, disjoint: :func:`gpus_per_run` each, as many workers (up to
    ``workers``) as ``visible`` has room for; no GPU for any worker with ``device=cpu`` or no GPU visible."""
    per_job = gpus_per_run(cfg)
    if cfg.device == "cpu" or not visible or per_job <= 0:
        return [[] for _ in range(workers)]
    if per_job > len(visible):
        asked = (f"--nproc {per_job} (one GPU per process)" if cfg.launcher.processes > 1
                 else f"launcher.gpus_per_job={per_job}")
        raise UserError(f"{asked}, but only {len(visible)} GPU(s) are visible here")
    return [list(visible[i * per_job:(i + 1) * per_job]) for i in range(min(workers, len(visible) // per_job))]


def local_gpus(workers: int, cfg: Config, echo: Echo) -> list[list[int]]:
    """``worker_gpus`` for the GPUs this process sees, echoed on one line."""
    import torch

    visible = [] if cfg.device == "cpu" else visible_gpus(torch.cuda.device_count(),
                                                          os.environ.get("CUDA_VISIBLE_DEVICES"))
    gpus = worker_gpus(workers, cfg, visible)
    if not any(gpus):
        echo(f"kdbench: {len(gpus)} local worker(s) on cpu")
    else:
        fewer = (f" (launcher.workers={cfg.launcher.workers}, {gpus_per_run(cfg)} GPU(s) per run, "
                 f"{len(visible)} GPU(s) visible)" if len(gpus) < workers else "")
        shares = "; ".join(f"worker {i}: GPU {','.join(map(str, ids))}" for i, ids in enumerate(gpus))
        echo(f"kdbench: {len(gpus)} local worker(s), {shares}{fewer}")
    return gpus


def submit_local(groups: list[list[Job]], gpus: list[list[int]], cfg: Config, suite: Suite, out: Path) -> list[Any]:
    """One submitit local job per group, each with its own ``CUDA_VISIBLE_DEVICES`` (submitit's ``visible_gpus``,
    which ``AutoExecutor`` does not pass on, and which a batch would set once for all its jobs)."""
    import submitit

    executor = submitit.LocalExecutor(folder=out / ".submitit" / "%j")
    submitted = []
    for group, ids in zip(groups, gpus, strict=True):
        executor.update_parameters(**executor_parameters(cfg), gpus_per_node=len(ids), visible_gpus=tuple(ids))
        submitted.append(executor.submit(RunGroup(), group, cfg, suite, str(out)))
    return submitted


def prepare_caches(jobs: list[Job], cfg: Config, suite: Suite, echo: Echo) -> None:
    """Pretrain (or load) every teacher and student backbone the jobs need, and compute the cached teacher
    outputs their stages will look up (``train.teacher_cache``), once, before workers start."""
    from kdbench.engine.runtime import resolve_runtime

    cores = len(os.sched_getaffinity(0))  # no worker runs yet, so every core, whatever train.threads gives each
    ws = Workspace(cfg, suite, resolve_runtime(cfg.device, cfg.train.amp, cores), echo)
    teachers = {(job.pair.name, job.benchmark.source): job for job in jobs}
    students = {job.pair.name: job for job in jobs if job.method != TEACHER}
    methods = {(job.pair.name, job.benchmark.source, job.method, json.dumps(job.hparams, sort_keys=True,
                                                                            default=str)): job
               for job in jobs if job.method != TEACHER} if cfg.train.teacher_cache != "off" else {}
    steps = [*((job, lambda job=job: ws.teacher(job.pair, job.benchmark.source)) for job in teachers.values()),
             *((job, lambda job=job: ws.student(job.pair, 1, job.seed)) for job in students.values()),
             *((job, lambda job=job: fill_teacher_cache(job, ws)) for job in methods.values())]
    said: set[str] = set()
    for job, prepare in steps:
        try:
            prepare()
        except (TrainingError, UserError) as exc:  # left to the runs that need it: each fails with this, as inline
            if str(exc) not in said:
                said.add(str(exc))
                echo(f"kdbench: could not prepare {job.pair.name} on {job.benchmark.source}: {exc}")


def dispatch(jobs: list[Job], cfg: Config, suite: Suite, out: Path, echo: Echo) -> Dispatch:
    """Run ``jobs`` with ``cfg.launcher``: inline and local wait for the runs, slurm returns once submitted."""
    import submitit

    pending = [job for job in jobs if not run_dir(out, job, cfg, suite).done]
    skipped = len(jobs) - len(pending)
    if not pending:
        return Dispatch({"done": 0, "skipped": skipped, "failed": 0}, [], True)
    kind = cfg.launcher.kind
    gpus: list[list[int]] = []
    if kind == "local":
        gpus = local_gpus(min(cfg.launcher.workers, len(pending)), cfg, echo)
        prepare_caches(pending, cfg, suite, echo)
    groups = groups_of(pending, cfg, len(gpus) if kind == "local" else None)
    try:
        if kind == "local":
            submitted = submit_local(groups, gpus, cfg, suite, out)
        else:
            executor = submitit.AutoExecutor(folder=out / ".submitit" / "%j", cluster=kind)
            executor.update_parameters(**executor_parameters(cfg))
            with executor.batch():
                submitted = [executor.submit(RunGroup(), group, cfg, suite, str(out)) for group in groups]
    except Exception as exc:  # no sbatch on this machine, a refused partition, ...
        raise UserError(f"launcher.kind={kind}: submitting the runs failed: {' '.join(str(exc).split())[:300]}"
                        ) from exc
    ids = [job.job_id for job in submitted]
    echo(f"kdbench: {len(pending)} run(s) in {len(groups)} {kind} job(s): {', '.join(ids)} "
         f"(logs in {out / '.submitit'})")
    if kind == "slurm":
        return Dispatch({"done": 0, "skipped": skipped, "failed": 0}, ids, False)
    counts = {"done": 0, "skipped": skipped, "failed": 0}
    follow(submitted, echo)
    for job in submitted:
        try:
            result = job.results()[0]  # a run's DDP processes all return; rank 0's counts stand for them
        except Exception as exc:  # a worker that died: its runs stay unfinished and resume on the next launch
            counts["failed"] += 1
            echo(f"kdbench: {kind} job {job.job_id} failed: {' '.join(str(exc).split())[:300]}")
            continue
        for key in ("done", "skipped", "failed"):
            counts[key] += result[key]
    return Dispatch(counts, ids, True)


def follow(submitted: list[Any], echo: Echo, poll_s: float = 0.5) -> None:
    """Echo each local worker's new log lines (its runs' result lines, prefixed ``w<i>``) until every worker has
    ended, so a sweep on local workers shows its progress as an inline one does."""
    import time

    offsets = [0] * len(submitted)

    def drain() -> None:
        for i, job in enumerate(submitted):
            path = Path(job.paths.stdout)
            if not path.is_file():
                continue
            with path.open("rb") as f:
                f.seek(offsets[i])
                data = f.read()
            complete = data[:data.rfind(b"\n") + 1]
            offsets[i] += len(complete)
            for line in complete.decode(errors="replace").splitlines():
                if line.strip() and not line.startswith("submitit "):  # submitit's own job bookkeeping
                    echo(f"w{i} {line}")

    while not all(job.done() for job in submitted):
        drain()
        time.sleep(poll_s)
    drain()
