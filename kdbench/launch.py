"""Sweeps: expand benchmarks × pairs × methods × seeds into runs, skip finished runs, execute the rest.

Each run is one (benchmark, pair, method, seed) with its resolved hyper-parameters; its directory name carries a
hash of everything that determines its result, so changing a hyper-parameter makes a new run instead of silently
reusing an old one. The teacher row is a run of its own (method ``teacher``, evaluated, never trained here beyond
its cached head).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from kdbench.config import LATER, YES, Config, declaration, is_section, iter_settings
from kdbench.data.domains import get_domain
from kdbench.data.loaders import FixedInputs, StageData
from kdbench.data.real.catalog import get_dataset
from kdbench.data.real.holdout import RULE as HOLDOUT_RULE
from kdbench.data.sources import domain_classes, is_real
from kdbench.data.synthetic import Split, make_split
from kdbench.engine.cost import eval_input_size, forward_gflops, images_per_second
from kdbench.engine.distributed import barrier, current, main_process_first
from kdbench.engine.evaluator import DomainScore, Protocol, evaluate, evaluate_loader, get_protocol
from kdbench.engine.predictions import SAMPLES, save_predictions, test_samples
from kdbench.engine.preemption import Preempted, hand_over, requested, stop_on_signals
from kdbench.engine.progress import run_label
from kdbench.engine.resume import ResumePoint, RunCheckpoint
from kdbench.engine.runtime import Runtime, apply_speed_options, seed_everything
from kdbench.engine.teacher_cache import StageTables, TeacherCache, TeacherTable, cached_stages
from kdbench.engine.tensorboard import live_curves, live_scores
from kdbench.engine.trainer import TrainingError, stage_config, train_method
from kdbench.errors import UserError
from kdbench.method import METHODS, Method, RunContext
from kdbench.models.checkpoints import atomic_save, file_digest, state_digest
from kdbench.models.heads import make_head
from kdbench.models.pretrain import cache_dir, pretrained_backbone, teacher_segmentor
from kdbench.models.segmentor import Segmentor
from kdbench.models.zoo import MODELS, Pair, get_pair
from kdbench.record import SCHEMA_VERSION, TEACHER, Record, reference_of
from kdbench.results import RunDir, git_commit, versions
from kdbench.search import draw_trials
from kdbench.suite import Benchmark, Suite


@dataclass(frozen=True)
class Job:
    benchmark: Benchmark
    pair: Pair
    method: str
    seed: int
    hparams: dict[str, Any] = field(default_factory=dict, hash=False)
    #: the hyper-parameter trial (``search.trials``): 0 is the defaults
    trial: int = 0

    @property
    def label(self) -> str:
        seed = "" if self.method == TEACHER else f" seed {self.seed}"
        trial = f" trial {self.trial}" if self.trial else ""
        return f"{self.benchmark.name}/{self.pair.name}/{self.method}{trial}{seed}"


def expand(cfg: Config, suite: Suite, benchmarks: list[str], pairs: list[str], methods: list[str]) -> list[Job]:
    """The sweep in execution order: per benchmark and pair, the teacher row, then methods × trials × seeds."""
    jobs = []
    for b in benchmarks:
        for p in pairs:
            bench, pair = suite.benchmarks[b], get_pair(p)
            jobs.append(Job(bench, pair, TEACHER, 0))
            for m in methods:
                for trial, hp in enumerate(trial_settings(cfg, f"{suite.name}/{b}/{p}/{m}", m)):
                    jobs.extend(Job(bench, pair, m, s, hp, trial) for s in cfg.seeds)
    return jobs


#: split name -> the name synthetic images are rendered under (its seeds); the test split has been rendered as
#: "val" since the first release, so the validation split, added later, has a name of its own
SYNTHETIC_SPLITS = {"train": "train", "test": "val", "val": "heldout-val"}


def trial_settings(cfg: Config, scope: str, method: str) -> list[dict[str, Any]]:
    """The hyper-parameters of each of ``search.trials`` trials of ``method`` in ``scope`` (suite/benchmark/pair/
    method): draws from its search space (``kdbench.search.draw_trials``), with the keys the config sets held at
    the config's values; a draw that then repeats an earlier trial is dropped."""
    cls = METHODS.get(method)
    fixed = cfg.method.get(method, {})
    base = cls.resolve_hparams(fixed)
    settings: list[dict[str, Any]] = []
    for drawn in draw_trials(cls, cfg.search.trials, cfg.search.seed, scope):
        setting = {**drawn, **{k: base[k] for k in fixed}}
        cls.check_hparams(setting)
        if setting not in settings:
            settings.append(setting)
    return settings


def _entering(node: Any, prefix: str = "") -> dict[str, Any]:
    """The settings of the config or section ``node`` (not its sections) that enter a run's identity, as each
    declares (``kdbench.config.setting``): every ``YES`` one, and a ``LATER`` one where it differs from the value
    runs had before it existed."""
    entering = {}
    for f in dataclasses.fields(node):
        if is_section(f):
            continue
        declared, value = declaration(f, prefix + f.name), getattr(node, f.name)
        if declared.identity is YES or declared.identity is LATER and value != declared.later_default:
            entering[f.name] = value
    return entering


def _digested(job: Job, cfg: Config) -> dict[str, Any]:
    """The values of the settings declared ``digest=True`` that this run reads, by dotted key: its own
    hyper-parameters for ``method``, its teacher's and student's entries of a mapping by model (``weights``), a
    plain path as it is (``pretrain.teacher_weights``)."""
    named: dict[str, Any] = {}
    for dotted, declared, value in iter_settings(cfg):
        if not declared.digest:
            continue
        if dotted == "method":
            named.update({f"method.{k}": v for k, v in job.hparams.items()})
        elif isinstance(value, dict):
            named.update({f"{dotted}.{m}": value.get(m, "") for m in (job.pair.teacher, job.pair.student)})
        else:
            named[dotted] = value
    return named


def run_identity(job: Job, cfg: Config, suite: Suite) -> dict[str, Any]:
    """Everything that determines a run's result (and nothing else: not the output folder, not the device): the
    run itself, then every setting as the config declares it (``kdbench.config.Identity``), section by section; a
    section enters where any of its settings does, and ``train`` not for the teacher row, which trains nothing."""
    identity = {"suite": suite.name, "benchmark": job.benchmark.name, "source": job.benchmark.source,
                "targets": list(job.benchmark.targets), "pair": job.pair.name, "teacher": job.pair.teacher,
                "student": job.pair.student, "method": job.method, "seed": job.seed, "hparams": job.hparams}
    for f in dataclasses.fields(cfg):
        if is_section(f) and not (f.name == "train" and job.method == TEACHER):
            section = _entering(getattr(cfg, f.name), f"{f.name}.")
            if section:
                identity[f.name] = section
    identity.update(_entering(cfg))
    if any(is_real(d) for d in job.benchmark.domains):  # what real runs train and select on
        identity["data"]["holdout"] = holdout_identity(job.benchmark.domains)
    files = _file_digests(_digested(job, cfg))
    if files:
        identity["files"] = files
    return identity


def holdout_identity(domains: Iterable[str]) -> str:
    """The validation rule of a real benchmark, for its runs' identity: the holdout rule, plus the datasets whose
    slice ``data prepare`` cuts from the raw training list (Mapillary). Their val rows came with that cut, so runs
    scoring one are redone to score it (an oracle over trials then averages the same targets); every other run, and
    every cached teacher head, keeps its identity: what they train on and score did not change."""
    cut = sorted(d for d in domains if is_real(d) and get_dataset(d).held_out)
    return f"{HOLDOUT_RULE}; converted from the raw training list's slice: {', '.join(cut)}" if cut else HOLDOUT_RULE


def _file_digests(settings: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of every file a setting names, so a run that reads a file is redone when the file changes."""
    return {key: file_digest(value) for key, value in settings.items()
            if isinstance(value, str) and value and Path(value).is_file()}


def run_dir(out: Path, job: Job, cfg: Config, suite: Suite) -> RunDir:
    digest = hashlib.sha256(json.dumps(run_identity(job, cfg, suite), sort_keys=True, default=str).encode())
    leaf = f"seed{job.seed}-{digest.hexdigest()[:8]}"
    return RunDir(out / suite.name / job.benchmark.name / job.pair.name / job.method / leaf)


class Workspace:
    """What runs of one sweep share in memory: data (synthetic splits or real datasets), teachers, student
    backbones."""

    def __init__(self, cfg: Config, suite: Suite, runtime: Runtime, echo: Callable[[str], None] = print):
        self.cfg, self.suite, self.runtime, self.echo = cfg, suite, runtime, echo
        self.protocol: Protocol = get_protocol(cfg.eval.protocol)
        self._splits: dict[tuple[str, str], Split] = {}
        self._teachers: dict[tuple[str, str], Segmentor] = {}
        self._student_backbones: dict[str, torch.nn.Module] = {}
        self._real = None
        self.digests: dict[object, str] = {}
        self.teacher_cache = TeacherCache(cache_dir(cfg), runtime, echo)

    @property
    def real(self):
        """The sweep's real datasets (``kdbench.data.real.access.RealData``), opened on first use."""
        if self._real is None:
            from kdbench.data.real.access import RealData

            self._real = RealData(self.cfg, self.runtime.device, current())
        return self._real

    def split(self, domain: str, split: str) -> Split:
        """A synthetic domain's ``train``, ``val`` or ``test`` split (each rendered from its own seeds)."""
        key = (domain, split)
        if key not in self._splits:
            count = self.cfg.data.train_images if split == "train" else self.cfg.eval.images
            if count <= 0:
                raise UserError(f"{'data.train_images' if split == 'train' else 'eval.images'} must be positive "
                                f"for synthetic domains (0 means 'all' on real datasets only)")
            self._splits[key] = make_split(get_domain(domain), SYNTHETIC_SPLITS[split], count,
                                           self.cfg.data.image_size)
        return self._splits[key]

    def stage_data(self, source: str):
        """Batches of every data kind of a source domain (synthetic or real)."""
        if is_real(source):
            return self.real.stage_data(source)
        domain = get_domain(source)
        return StageData(self.split(source, "train"), domain.scene, self.cfg.data.image_size, self.runtime.device)

    def score(self, model: Segmentor, domain: str, split: str = "test", keep: int = 0) -> DomainScore:
        """``model``'s mIoU on ``domain``'s ``test`` (or ``val``) split under the sweep's protocol, with the wall
        seconds it took and its first ``keep`` predictions."""
        start = time.perf_counter()
        if is_real(domain):
            loaders = {"test": self.real.eval_loader, "val": self.real.val_loader}
            if split not in loaders:
                raise UserError(f"{domain}: no split {split!r}; real datasets have test and val splits")
            score = evaluate_loader(model, loaders[split](domain), len(domain_classes(domain)), self.protocol,
                                    self.runtime, desc=f"eval {domain} ({split})", keep=keep)
        else:
            score = evaluate(model, self.split(domain, split), self.protocol, self.cfg.eval.batch_size,
                             self.runtime, desc=f"eval {domain} ({split})", keep=keep)
        return dataclasses.replace(score, seconds=time.perf_counter() - start)

    def has_val(self, domain: str) -> bool:
        """Whether ``domain`` has a validation split disjoint from its test and training images (and
        ``eval.validate`` scores it): every synthetic domain; a real dataset with a labelled training split
        (``kdbench.data.real.holdout``)."""
        return self.cfg.eval.validate and (not is_real(domain) or self.real.has_val(domain))

    def teacher(self, pair: Pair, source: str) -> Segmentor:
        key = (pair.teacher, source)
        if key not in self._teachers:
            batches = None
            if is_real(source):
                def batches(batch_size: int):
                    return self.stage_data(source).batches("source", batch_size, seed=0)
            self._teachers[key], _ = teacher_segmentor(MODELS.get(pair.teacher), self.cfg, self.suite.target_domains,
                                                       source, self.runtime, self.echo, batches)
            self.digests[key] = state_digest(self._teachers[key])
        return self._teachers[key]

    def teacher_table(self, pair: Pair, source: str, inputs: FixedInputs, taps: frozenset[str]) -> TeacherTable:
        """The teacher's ``taps`` on a fixed input set of ``source``, computed once (``train.teacher_cache``)."""
        teacher = self.teacher(pair, source)
        spec = MODELS.get(pair.teacher)
        identity = {"model": spec.name, "arch": spec.arch, "kwargs": spec.kwargs, "head": self.cfg.head,
                    "weights": self.digests[(pair.teacher, source)]}
        return self.teacher_cache.table(teacher, identity, inputs, taps)

    def teacher_tables(self, method: Method, pair: Pair, source: str, data) -> StageTables:
        """For each stage of ``method``: its cached teacher outputs where ``train.teacher_cache`` caches them."""
        return StageTables(cached_stages(method, data, self.cfg.train.teacher_cache),
                           lambda inputs: self.teacher_table(pair, source, inputs, method.teacher_taps(method.hp)))

    def student(self, pair: Pair, num_classes: int, seed: int) -> Segmentor:
        """A fresh student: a copy of the pretrained backbone (loaded once per sweep) and a seeded new head."""
        if pair.student not in self._student_backbones:
            self._student_backbones[pair.student], _ = pretrained_backbone(
                MODELS.get(pair.student), self.cfg, self.suite.target_domains, self.runtime, self.echo)
            self.digests[pair.student] = state_digest(self._student_backbones[pair.student])
        backbone = self._student_backbones[pair.student]
        torch.manual_seed(seed)
        return Segmentor(copy.deepcopy(backbone), make_head(self.cfg.head, backbone, num_classes)
                         ).to(self.runtime.device)


def build_method(job: Job, teacher: Segmentor, student: Segmentor, ws: Workspace) -> Method:
    """The job's method around ``teacher`` and ``student``, built with its run context (the pair's kind,
    ``data.image_size``, the source domain's classes, the workspace's device) and moved to that device."""
    context = RunContext(pair_kind=job.pair.kind, image_size=ws.cfg.data.image_size,
                         num_classes=len(domain_classes(job.benchmark.source)), device=ws.runtime.device)
    method: Method = METHODS.get(job.method)(teacher, student, context, **job.hparams)
    return method.to(context.device)


def fill_teacher_cache(job: Job, ws: Workspace) -> None:
    """Compute (or load) now the cached teacher outputs every stage of ``job`` will look up, so that workers
    started afterwards only read them."""
    source = job.benchmark.source
    teacher = ws.teacher(job.pair, source)
    method = build_method(job, teacher, ws.student(job.pair, len(domain_classes(source)), job.seed), ws)
    tables = ws.teacher_tables(method, job.pair, source, ws.stage_data(source))
    for stage in method.stages():
        tables(stage)


def execute(job: Job, cfg: Config, ws: Workspace, rd: RunDir, resume: ResumePoint | None = None
            ) -> list[dict[str, Any]]:
    """Train (unless it is the teacher row) and evaluate one run, going on from ``resume`` when an interrupted
    attempt left one; return its records (none on ranks > 0)."""
    ranks = current()
    seed_everything(job.seed)
    start = time.perf_counter()
    if ws.runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ws.runtime.device)
    bench = job.benchmark
    with main_process_first():
        teacher = ws.teacher(job.pair, bench.source)
    info: dict[str, Any] = {"train_steps": 0, "stages": []}
    if job.method == TEACHER:
        model, prepare = teacher, time.perf_counter() - start
    else:
        with main_process_first():
            student = ws.student(job.pair, len(domain_classes(bench.source)), job.seed)
        prepare = time.perf_counter() - start  # shared, cached work (pretraining), not the method's cost
        method = build_method(job, teacher, student, ws)
        apply_speed_options(method, cfg.train)
        data = ws.stage_data(bench.source)

        def save_stage(stage) -> None:
            atomic_save({"stage": stage.name, "student": method.student.state_dict(),
                         "method": {k: v for k, v in method.state_dict().items() if not k.startswith("student.")}},
                        rd.path / f"stage-{stage.name}.pt")

        def batches_for(stage):
            return data.batches(stage.data, stage_config(stage, cfg.train, data.size).batch_size, job.seed)

        tables = ws.teacher_tables(method, job.pair, bench.source, data)
        curves = live_curves(rd.log_metrics if ranks.is_main else None, rd.path, method, cfg.train, data.size, resume)
        with run_label(job.label), curves as log:
            results = train_method(method, batches_for, cfg.train, ws.runtime,
                                   log=log,
                                   on_stage_end=save_stage if ranks.is_main else None,
                                   checkpoint=RunCheckpoint(rd.path, cfg.train.checkpoint_every,
                                                            writer=ranks.is_main),
                                   resume=resume, metrics_lines=rd.metrics_count, dist_info=ranks,
                                   data_size=data.size, teacher_table=tables)
        info = {"train_steps": sum(r.steps for r in results),
                "stages": [{"name": r.name, "steps": r.steps, "wall_s": round(r.wall_s, 2),
                            "teacher_cached": r.name in tables.cached} for r in results],
                "extra_params": method.extra_parameter_count(),
                "train_images_per_s": _rounded(images_per_second(results, {
                    s.name: stage_config(s, cfg.train, data.size).batch_size for s in method.stages()}), 2)}
        model = method.student
    train_wall = time.perf_counter() - start
    if not ranks.is_main:  # rank 0 evaluates and writes
        return []
    scores = {(d, "test"): ws.score(model, d, keep=SAMPLES) for d in bench.domains}
    scores.update({(d, "val"): ws.score(model, d, "val") for d in bench.domains if ws.has_val(d)})
    save_predictions(rd.path, {d: scores[d, "test"].predictions for d in bench.domains},
                     test_samples(ws) if job.method == TEACHER else None)
    peak = (torch.cuda.max_memory_allocated(ws.runtime.device) if ws.runtime.device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    flops_input = eval_input_size(ws.protocol, cfg.data.image_size, any(is_real(d) for d in bench.domains))
    common = {
        "suite": ws.suite.name, "benchmark": bench.name, "pair": job.pair.name, "pair_kind": job.pair.kind,
        "teacher": job.pair.teacher, "student": job.pair.student if job.method != TEACHER else job.pair.teacher,
        "method": job.method, "reference": reference_of(job.method), "schema": SCHEMA_VERSION,
        "hparams": job.hparams, "trial": job.trial, "seed": job.seed,
        "protocol": ws.protocol.name,
        "protocol_caption": ws.protocol.caption(), "checkpoint": "last", **info,
        "student_params": sum(p.numel() for p in model.parameters()),
        "gflops": forward_gflops(model, flops_input), "flops_input": flops_input,
        "wall_s": round(time.perf_counter() - start, 2), "train_wall_s": round(train_wall, 2),
        "prepare_s": round(prepare, 2),
        "images_without_labels": ws.real.images_without_labels(bench.domains)
        if any(is_real(d) for d in bench.domains) else {},
        "teacher_digest": ws.digests[(job.pair.teacher, bench.source)],
        "student_init_digest": ws.digests.get(job.pair.student) if job.method != TEACHER else None,
        "peak_memory_mb": round(peak / 2**20, 1),
        "peak_memory_kind": "cuda-allocated" if ws.runtime.device.type == "cuda" else "process-max-rss",
        "device": ws.runtime.device_name, "precision": ws.runtime.precision, "threads": torch.get_num_threads(),
        "versions": versions(), "git_commit": git_commit(), "run_dir": rd.path.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return [score_record(common, bench, d, split, s) for (d, split), s in scores.items()]


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def score_record(common: dict[str, Any], bench: Benchmark, domain: str, split: str, score: DomainScore
                 ) -> dict[str, Any]:
    """One record (:class:`kdbench.record.Record`, as written): a run's ``common`` fields, or a record of it of
    any schema, with its score on one (domain, split)."""
    return Record.from_json({
        **common, "domain": domain, "role": "source" if domain == bench.source else "target", "split": split,
        "miou": round(score.miou, 3), "per_class_iou": dict(zip(domain_classes(domain), score.per_class_iou,
                                                                strict=True)),
        "images": score.images,
        "eval_s": None if score.seconds is None else round(score.seconds, 3)}).to_json()


def add_val_records(job: Job, ws: Workspace, rd: RunDir) -> int:
    """Score a finished run recorded before validation splits existed on them now, from its final weights (the
    last stage's checkpoint; the teacher row's cached teacher), and add those rows to its records, as the run
    would have written them. Returns how many rows were added (0: it has them, or there is nothing to score)."""
    records = rd.records()
    if not records or any(r.get("split") == "val" for r in records):
        return 0
    domains = [d for d in job.benchmark.domains if ws.has_val(d)]
    if not domains:
        return 0
    bench = job.benchmark
    teacher = ws.teacher(job.pair, bench.source)
    model = teacher
    if job.method != TEACHER:
        method = build_method(job, teacher, ws.student(job.pair, len(domain_classes(bench.source)), job.seed), ws)
        final = rd.path / f"stage-{method.stages()[-1].name}.pt"
        if not final.is_file():
            return 0
        method.student.load_state_dict(torch.load(final, map_location=ws.runtime.device, weights_only=True)["student"])
        model = method.student
    template = next(r for r in records if r.get("split", "test") == "test")
    rows = [score_record(template, bench, d, "val", ws.score(model, d, "val")) for d in domains]
    rd.add_records(rows)
    return len(rows)


def summary_line(job: Job, records: list[dict[str, Any]]) -> str:
    records = [r for r in records if r.get("split", "test") == "test"]
    source = next(r for r in records if r["role"] == "source")
    targets = [r for r in records if r["role"] == "target"]
    ood = sum(r["miou"] for r in targets) / len(targets)
    per = ", ".join(f"{r['domain']} {r['miou']:.1f}" for r in targets)
    return (f"{job.label}: in-domain {source['miou']:.1f}, out-of-domain {ood:.1f} ({per}) "
            f"in {source['wall_s']:.0f} s")


def run_sweep(jobs: list[Job], cfg: Config, suite: Suite, runtime: Runtime, out: Path,
              echo: Callable[[str], None]) -> dict[str, int]:
    """Run every job not already done; a failing run is recorded with its reason and the sweep goes on. On SIGTERM,
    SIGINT or SIGUSR2 the run in training saves its state and :class:`Preempted` ends the sweep
    (``kdbench.engine.preemption``); on SLURM, SIGUSR2 then goes on to submitit, which requeues the job."""
    with stop_on_signals():
        try:
            return _run_jobs(jobs, cfg, suite, runtime, out, echo)
        except Preempted as exc:
            hand_over(exc)
            raise


def _run_jobs(jobs: list[Job], cfg: Config, suite: Suite, runtime: Runtime, out: Path,
              echo: Callable[[str], None]) -> dict[str, int]:
    ws = Workspace(cfg, suite, runtime, echo)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    info = current()
    for i, job in enumerate(jobs, start=1):
        rd = run_dir(out, job, cfg, suite)
        prefix = f"[{i}/{len(jobs)}]"
        signum = requested()
        if signum:
            raise Preempted(signum, f"before {job.label}")
        if rd.done:
            counts["skipped"] += 1
            added = add_val_records(job, ws, rd) if info.is_main else 0
            scored = f"; scored on the {added} val split(s) it was recorded without" if added else ""
            echo(f"{prefix} {job.label}: already done, skipped ({rd.path}){scored}")
            continue
        point = None
        if job.method != TEACHER:
            point = RunCheckpoint(rd.path, cfg.train.checkpoint_every, writer=info.is_main).load()
        barrier()  # every rank has read the resume state before rank 0 may clear it
        if point is None:
            if info.is_main:
                rd.start({"identity": run_identity(job, cfg, suite), "config": cfg.to_dict()})
        else:
            if info.is_main:
                rd.remove_stale_temporaries()
                rd.truncate_metrics(point.state["metrics_lines"])
            echo(f"{prefix} {job.label}: resuming an interrupted run at stage {point.stage + 1}, step {point.step}")
        try:
            records = execute(job, cfg, ws, rd, point)
        except Preempted as exc:
            saved = ", its state saved" if job.method != TEACHER else ""
            raise Preempted(exc.signum, f"{exc.where} in {job.label}{saved}") from None
        except (TrainingError, UserError) as exc:  # this run cannot go on (e.g. a file that does not fit)
            if info.is_main:
                rd.fail(str(exc))
            counts["failed"] += 1
            echo(f"{prefix} {job.label}: FAILED: {exc}")
        else:
            if info.is_main:
                live_scores(cfg.train, rd.path, records)
                rd.finish(records)
                echo(f"{prefix} {summary_line(job, records)}")
            counts["done"] += 1
        barrier()
    return counts
