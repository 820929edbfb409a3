"""The ``kdbench`` command line: run, report, list, data, show, cache."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click

from kdbench.config import choices_of
from kdbench.errors import UserError


def user_errors(fn):
    """Turn a UserError into click's one-line ``Error: ...`` and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise click.ClickException(" ".join(str(exc).split())) from None

    return wrapper


def _silent(_: str) -> None:
    """The echo of processes other than rank 0."""


def _torchrun(nproc: int) -> int:
    """Run this same command under torchrun on ``nproc`` processes of this machine; its exit status."""
    args = list(sys.argv[1:])
    for i, arg in enumerate(args):
        if arg == "--nproc":
            del args[i:i + 2]
            break
        if arg.startswith("--nproc="):
            del args[i]
            break
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "kdbench", *args]
    return subprocess.run(command, check=False).returncode


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kdbench")
def cli() -> None:
    """kdbench: knowledge distillation for semantic segmentation, scored in-domain and out-of-domain."""


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of config overrides.")
@click.option("--suite", help="Suite name (synth5, smoke) or a suite YAML path. Default: synth5.")
@click.option("--methods", help="Comma-separated method names, or 'all'. Default: student-only,kd.")
@click.option("--pairs", help="Comma-separated teacher->student pair names, or 'all' (the suite's pairs); a pair may "
                             "be composed as TEACHER:STUDENT[:KIND] from `kdbench list models`, e.g. dinov3-l:deit-s.")
@click.option("--benchmarks", help="Comma-separated benchmark names of the suite, or 'all'.")
@click.option("--seeds", help="Comma-separated integer seeds. Default: 0.")
@click.option("--preset", help="The suite's schedule preset (synth5: quick, full; dg5: quick, paper). Default: quick.")
@click.option("--data-root", type=click.Path(file_okay=False),
              help="Root folder of the real datasets (suite dg5); sets data.root.")
@click.option("--out", help="Output root for run directories and the report. Default: runs (the shipped reference runs "
                   "live apart, under results/).")
@click.option("--device", type=click.Choice(choices_of("device")), help="Default: auto (a GPU if there is one).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. train.steps=500 or method.kd.temperature=2. Repeatable.")
@click.option("--launcher", type=click.Choice(choices_of("launcher.kind")),
              help="Where runs execute: auto (default: one worker per GPU, or per core on CPU), inline (this "
                   "process), local (launcher.workers processes), slurm (one job a run).")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train each run on this many processes (DDP; one GPU each on GPUs): inline through torchrun, "
                   "with --launcher local/slurm as the tasks of each run's job.")
@click.option("--trials", help="Hyper-parameter settings per (benchmark, pair, method): trial 0 is the defaults, "
                               "the rest drawn from the method's search space (sets search.trials). Default: 1.")
@click.option("--dry-run", is_flag=True,
              help="Print the resolved config and every run the sweep would make (done or to run), then stop: "
                   "nothing is trained or written.")
@user_errors
def run(config_file, suite, methods, pairs, benchmarks, seeds, preset, data_root, out, device, sets, launcher, nproc,
        trials, dry_run) -> None:
    """Train and evaluate every (benchmark, pair, method, trial, seed) of a suite; skip runs already done."""
    from kdbench.engine.distributed import DistInfo, check_batch, check_process_gpus, init_from_env
    from kdbench.engine.runtime import resolve_runtime
    from kdbench.launch import expand, run_sweep
    from kdbench.report.document import TABLE_FORMATS, write_report
    from kdbench.resolve import (
        check_compatible,
        check_data_root,
        check_search_spaces,
        check_teacher_cache,
        check_teacher_weights,
        check_tensorboard,
        check_token_grids,
        check_writable,
        resolve_config,
        selections,
    )

    seed_list = None
    if seeds is not None:
        try:
            seed_list = [int(s) for s in _csv(seeds)]
        except ValueError:
            raise UserError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    options = {"suite": suite, "methods": _csv(methods), "pairs": _csv(pairs), "benchmarks": _csv(benchmarks),
               "seeds": seed_list, "preset": preset, "out": out, "device": device,
               "data": {"root": data_root} if data_root else None}
    if trials is not None:
        from kdbench.search import check_trial_count

        check_trial_count(trials)
    cfg, suite_obj = resolve_config(config_file, options, sets)
    if trials is not None:
        cfg.search.trials = int(trials)
    if launcher:
        cfg.launcher.kind = launcher
    nproc = nproc if nproc > 1 else cfg.launcher.processes  # --nproc, or launcher.processes from a config
    if cfg.launcher.kind == "auto" and (nproc > 1 or "WORLD_SIZE" in os.environ):
        cfg.launcher.kind = "inline"  # one run's processes: torchrun
    if nproc > 1:
        check_batch(cfg.train.batch_size, DistInfo(world=nproc))
        if cfg.launcher.kind != "inline":  # each submitit job runs the run's processes as its tasks
            cfg.launcher.processes = nproc
        elif "WORLD_SIZE" not in os.environ:
            check_process_gpus(nproc, cfg.device)
            raise SystemExit(_torchrun(nproc))
    bench_names, pair_names, method_names = selections(cfg, suite_obj)
    runtime = resolve_runtime(cfg.device, cfg.train.amp, cfg.train.threads)
    info = init_from_env(runtime.device.type)
    check_batch(cfg.train.batch_size, info)
    echo = click.echo if info.is_main else _silent
    check_compatible(method_names, pair_names)
    check_token_grids(method_names, pair_names, cfg.data.image_size)
    check_search_spaces(method_names)
    check_teacher_weights(cfg, pair_names)
    check_data_root(cfg, suite_obj, bench_names)
    check_teacher_cache(cfg, suite_obj, bench_names, pair_names, method_names)
    check_tensorboard(cfg)
    out_dir = Path(cfg.out)
    if dry_run:
        _print_plan(cfg, suite_obj, expand(cfg, suite_obj, bench_names, pair_names, method_names), out_dir)
        return
    check_writable(out_dir)
    jobs = expand(cfg, suite_obj, bench_names, pair_names, method_names)
    if cfg.launcher.kind == "auto":
        from kdbench.launch import run_dir
        from kdbench.launchers import resolve_auto

        layout = resolve_auto(cfg, sum(not run_dir(out_dir, job, cfg, suite_obj).done for job in jobs))
        workers = f", {cfg.launcher.workers} workers × {cfg.train.threads or 'default'} thread(s)" \
            if layout.kind == "local" else ""
        echo(f"kdbench: launcher auto -> {layout.kind}{workers} ({layout.why})")
    processes = f" × {info.world} processes" if info.enabled else ""
    echo(f"kdbench: suite {suite_obj.name} ({cfg.preset}), {len(bench_names)} benchmark(s) × "
         f"{len(pair_names)} pair(s) × {len(method_names)} method(s) × "
         f"{f'up to {cfg.search.trials} trial(s) × ' if cfg.search.trials > 1 else ''}{len(cfg.seeds)} seed(s) "
         f"+ teacher rows = {len(jobs)} runs on {runtime.device_name}{processes} ({runtime.precision})")
    start = time.perf_counter()
    if cfg.launcher.kind == "inline":
        from kdbench.engine.preemption import Preempted

        try:
            counts = run_sweep(jobs, cfg, suite_obj, runtime, out_dir, echo)
        except Preempted as exc:
            click.echo(f"kdbench: {exc}", err=True)
            raise SystemExit(exc.exit_code) from None
    else:
        from kdbench.launchers import dispatch

        try:
            result = dispatch(jobs, cfg, suite_obj, out_dir, echo)
        except KeyboardInterrupt:  # the local workers got the Ctrl-C too: each saves its run's state and stops
            click.echo("kdbench: interrupted; the workers save their runs' state and stop, and the same command "
                       "again resumes", err=True)
            raise SystemExit(130) from None
        counts = result.counts
        if not result.waited:
            click.echo(f"kdbench: submitted; when the jobs end, `kdbench report {out_dir}` (the same command "
                       "again skips finished runs and resumes unfinished ones)")
            return
    if not info.is_main:
        return
    report = write_report(out_dir, formats=TABLE_FORMATS)
    click.echo(f"kdbench: {counts['done']} run(s) done, {counts['skipped']} skipped, {counts['failed']} failed "
               f"in {time.perf_counter() - start:.0f} s")
    click.echo(f"results: {out_dir.resolve()}")
    click.echo(f"report:  {report.markdown.resolve()}  (tables only; `kdbench report {out_dir}` adds the plots)")
    if counts["failed"]:
        raise SystemExit(1)


def _print_plan(cfg, suite, jobs, out_dir: Path) -> None:
    """``run --dry-run``: the resolved config as YAML, then one line per run with its directory and state."""
    import yaml

    from kdbench.launch import run_dir
    from kdbench.results import DONE, FAILED

    click.echo("# resolved config")
    click.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
    click.echo(f"# {len(jobs)} runs under {out_dir}")
    states = {"done": 0, "failed": 0, "to run": 0}
    for job in jobs:
        path = run_dir(out_dir, job, cfg, suite).path
        state = "done" if (path / DONE).is_file() else "failed" if (path / FAILED).is_file() else "to run"
        states[state] += 1
        hparams = f" {json.dumps(job.hparams, sort_keys=True)}" if job.trial else ""
        click.echo(f"{state:7s} {job.label}{hparams}  {path}")
    click.echo(f"# {states['done']} done, {states['to run']} to run, {states['failed']} failed before "
               "(run again)")


@cli.command()
@click.argument("results_dir", type=click.Path(file_okay=False))
@click.option("--out", help="Where to write the report (default: into RESULTS_DIR).")
@click.option("--format", "formats", default="md,html,csv,tex,png,svg", show_default=True,
              help="Comma-separated outputs: md (report.md), html (report.html, self-contained), csv and tex "
                   "(tables), png and svg (plots).")
@click.option("--methods", help="Only these methods (comma-separated); the teacher and student-only rows stay.")
@click.option("--pairs", help="Only these teacher->student pairs (comma-separated).")
@click.option("--benchmarks", help="Only these benchmarks (comma-separated).")
@click.option("--select", "select_rules",
              help="Model-selection rules, comma-separated or 'all': default (trial 0), source-val, oracle (uses "
                   "target labels: an upper bound). Default: every rule the results allow, where methods ran "
                   "several trials.")
@user_errors
def report(results_dir, out, formats, methods, pairs, benchmarks, select_rules) -> None:
    """Paper tables (Markdown, CSV, LaTeX), plots and report.md from the run records under RESULTS_DIR."""
    from kdbench.report import write_report
    from kdbench.report.render import to_markdown
    from kdbench.report.tables import summary_view
    from kdbench.selection import parse_rules

    rules = parse_rules(select_rules) if select_rules is not None else None
    written = write_report(Path(results_dir), Path(out) if out else None, tuple(_csv(formats) or []),
                           _csv(methods), _csv(pairs), _csv(benchmarks), rules)
    for heading, table in written.tables:
        click.echo(f"{heading.removeprefix('## Suite ')}, {table.pair} ({table.pair_kind})\n"
                   f"{to_markdown(summary_view(table))}\n")
    where = (Path(out) if out else Path(results_dir)).resolve()
    shown = f"; per-target tables in {where / 'report.md'}" if written.markdown else ""
    click.echo(f"wrote {len(written.files)} file(s) under {where}{shown}")
    if written.markdown is not None:
        click.echo(f"report: {written.markdown.resolve()}")


@cli.command(name="list")
@click.argument("what", type=click.Choice(["methods", "suites", "pairs", "benchmarks", "domains", "datasets",
                                           "models"]))
@click.option("--details", is_flag=True, help="methods: also each one's hyper-parameters, defaults and search space.")
@user_errors
def list_(what, details) -> None:
    """What is registered, one line each."""
    if what == "methods":
        from kdbench.method import METHODS
        from kdbench.search import describe_space, tunable

        for name in METHODS.names():
            try:
                method = METHODS.get(name)
                description = method.description()
            except UserError as exc:
                method, description = None, f"(failed to load: {exc})"
            click.echo(f"{name:16s} {description}")
            if details and method is not None:
                defaults = ", ".join(f"{k}={v}" for k, v in method.defaults.items()) or "none"
                click.echo(f"{'':16s}   hyper-parameters: {defaults}")
                space = describe_space(method) if tunable(method) else "none (run at its defaults only)"
                click.echo(f"{'':16s}   search space: {space}")
        click.echo(f"{'teacher':16s} (row, not a method) the frozen teacher itself, evaluated on every benchmark")
    elif what == "suites":
        from kdbench.suite import load_suite, suite_names

        for name in suite_names():
            click.echo(f"{name:16s} {load_suite(name).description}")
    elif what == "pairs":
        from kdbench.models.zoo import PAIRS
        from kdbench.suite import suites_by_pair

        owners = suites_by_pair()
        for name in PAIRS.names():
            pair = PAIRS.get(name)
            suites = ", ".join(owners.get(name, [])) or "any suite (listed by none)"
            click.echo(f"{name:22s} {pair.kind}  {pair.teacher} -> {pair.student}: {pair.description} [{suites}]")
    elif what == "benchmarks":
        from kdbench.suite import load_suite, suite_names

        for suite in suite_names():
            for bench in load_suite(suite).benchmarks.values():
                click.echo(f"{suite + '/' + bench.name:24s} {bench.source} -> {', '.join(bench.targets)}: "
                           f"{bench.description}")
    elif what == "datasets":
        from kdbench.data.real.catalog import DATASETS

        for name, spec in DATASETS.items():
            click.echo(f"{name:16s} {len(spec.classes):2d} classes  {spec.title}")
    elif what == "models":
        from kdbench.models.zoo import MODELS
        from kdbench.suite import load_suite, suite_names

        for suite in suite_names():  # the shipped suites' own models
            load_suite(suite)
        for name in MODELS.names():
            try:
                spec = MODELS.get(name)
            except UserError as exc:
                click.echo(f"{name:16s} (failed to load: {exc})")
                continue
            weights = ("file|hub" if spec.hub else "file") if spec.pretrain == "file" else spec.pretrain
            click.echo(f"{name:16s} {spec.arch:4s} {spec.model_role:10s} {weights:10s} {spec.description} "
                       f"[{spec.origin}]")
    else:
        from kdbench.data.domains import DOMAINS

        for name, domain in DOMAINS.items():
            click.echo(f"{name:16s} {domain.scene:7s} {domain.description}")


def _suite_datasets(suite: str, datasets: str | None) -> list[str]:
    """The datasets named by ``--datasets``, or every real dataset the suite's benchmarks read."""
    from kdbench.data.real.catalog import get_dataset
    from kdbench.data.sources import is_real
    from kdbench.suite import load_suite

    if datasets:
        names = _csv(datasets) or []
        for name in names:
            get_dataset(name)
        return names
    loaded = load_suite(suite)
    names = list(dict.fromkeys(d for b in loaded.benchmarks.values() for d in b.domains if is_real(d)))
    if not names:
        raise UserError(f"suite {loaded.name!r} reads no real datasets (its domains are synthetic)")
    return names


def _paths(assignments: tuple[str, ...]) -> dict[str, str]:
    paths = {}
    for assignment in assignments:
        name, sep, folder = assignment.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise UserError(f"--path {assignment!r} must look like DATASET=FOLDER")
        paths[name.strip()] = folder.strip()
    return paths


def _data_options(fn):
    options = [
        click.option("--suite", default="dg5", show_default=True, help="Check the datasets this suite reads."),
        click.option("--datasets", help="Comma-separated dataset names instead (see `kdbench list datasets`)."),
        click.option("--data-root", type=click.Path(file_okay=False), default="", help="Root folder of the data."),
        click.option("--path", "paths", multiple=True, metavar="DATASET=FOLDER",
                     help="A dataset's folder, overriding DATA_ROOT/<its default folder>. Repeatable."),
        click.option("--cache", type=click.Path(file_okay=False),
                     help="Folder of prepared (converted) datasets. Default: $KDBENCH_DATA_CACHE or "
                          "~/.cache/kdbench/data."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _cache(cache: str | None) -> Path:
    from kdbench.data.real.access import data_cache_dir

    return data_cache_dir(cache or "")


@cli.group()
def data() -> None:
    """Real datasets: check what is on disk; prepare (convert) what needs converting."""


@data.command()
@_data_options
@click.option("--limit", type=click.IntRange(min=1), help="Decode only N files of each split, spread over it "
              "(counts and label pairing are checked for all).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Decoding threads (the report is the same, in the same order, for any number).")
@user_errors
def check(suite, datasets, data_root, paths, cache, limit, workers) -> None:
    """Say per dataset what was found (image and label counts against the official split sizes) and name every
    problem; train nothing, write nothing. A dataset that `data prepare` converts and that is not converted yet is
    checked in its raw download. Exit status 1 if any dataset has an error."""
    from kdbench.data.real.check import check_datasets, format_reports

    if not data_root and not paths:
        raise UserError("give --data-root DIR (or --path DATASET=FOLDER for each dataset)")
    reports = check_datasets(_suite_datasets(suite, datasets), Path(data_root), _cache(cache), _paths(paths),
                             limit=limit, workers=workers)
    click.echo(format_reports(reports))
    if not all(r.ok for r in reports):
        raise SystemExit(1)


@data.command()
@_data_options
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Conversion threads (tiles or images converted in parallel).")
@user_errors
def prepare(suite, datasets, data_root, paths, cache, workers) -> None:
    """Convert what needs converting (ISPRS tiles to 512 px patches, Mapillary to 19 classes at half resolution)
    into the cache folder, never into the originals. Safe to interrupt and re-run: done work is skipped. A dataset
    that fails does not stop the others; the summary names it and the exit status is 1."""
    from kdbench.data.real.prepare import prepare_datasets

    if not data_root and not paths:
        raise UserError("give --data-root DIR (or --path DATASET=FOLDER for each dataset)")
    target = _cache(cache)
    summary = prepare_datasets(_suite_datasets(suite, datasets), Path(data_root), target, _paths(paths),
                               echo=click.echo, workers=workers)
    click.echo(f"Summary (prepared data in {target.resolve()}):")
    for line in summary.lines():
        click.echo(f"  {line}")
    if summary.failed:
        names = ", ".join(r.name for r in summary.failed)
        raise UserError(f"{len(summary.failed)} of {len(summary.results)} dataset(s) failed to prepare: {names} "
                        "(reasons above; kdbench data check names every bad raw file); the others are done, and a "
                        "re-run retries only what is not")


@cli.group()
def cache() -> None:
    """The model cache folder: pretrained backbones, teacher heads and teacher-output tables."""


_CACHE_OPTION = click.option("--cache", "folder", type=click.Path(file_okay=False),
                             help="The cache folder. Default: $KDBENCH_CACHE, else ~/.cache/kdbench.")


@cache.command(name="list")
@_CACHE_OPTION
@user_errors
def cache_list(folder) -> None:
    """Every file kdbench keeps in the cache folder: kind, model or key, size, last written; totals per kind."""
    from kdbench.cache_folder import KINDS, cache_files, cache_root, mib

    root = cache_root(folder)
    files = cache_files(root)
    click.echo(f"cache folder: {root}")
    for f in files:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(f.modified))
        click.echo(f"{f.kind:16s} {f.name:36s} {mib(f.size):>12s}  {when}")
    for kind in KINDS:
        sizes = [f.size for f in files if f.kind == kind]
        click.echo(f"{kind}: {len(sizes)} file(s), {mib(sum(sizes))}")
    click.echo(f"total: {len(files)} file(s), {mib(sum(f.size for f in files))}")


@cache.command(name="clear")
@_CACHE_OPTION
@click.option("--kind", "kinds", metavar="KINDS",
              help="Comma-separated kinds to remove (teacher-outputs, teachers, backbones) or all. Default: "
                   "teacher-outputs, which the next run recomputes exactly.")
@click.option("--yes", is_flag=True, help="Remove pretrained weights (teachers, backbones) without asking.")
@user_errors
def cache_clear(folder, kinds, yes) -> None:
    """Remove cache files by kind. Teacher-output tables come back exactly; pretrained teachers and backbones are
    pretrained anew, and not bit for bit the same on another machine, so they are removed only when named."""
    from kdbench.cache_folder import WEIGHT_KINDS, cache_files, cache_root, mib, parse_kinds, remove

    chosen = parse_kinds(kinds)
    root = cache_root(folder)
    files = [f for f in cache_files(root) if f.kind in chosen]
    weights = [f for f in files if f.kind in WEIGHT_KINDS]
    if weights and not yes:
        what = f"remove {len(weights)} pretrained weight file(s) ({mib(sum(f.size for f in weights))}) from {root}"
        if not sys.stdin.isatty():
            raise UserError(f"{what}: pass --yes to confirm (nothing was removed)")
        click.confirm(f"{what}? Runs after this use newly pretrained weights, not comparable with earlier runs",
                      abort=True)
    count, freed = remove(files)
    click.echo(f"removed {count} file(s) ({', '.join(chosen)}), {mib(freed)} freed, from {root}")


@cli.group()
def show() -> None:
    """Pictures of a suite: what its domains look like."""


@show.command()
@click.option("--suite", help="Suite name (synth5, smoke, dg5) or a suite YAML path. Default: synth5.")
@click.option("--benchmarks", help="Comma-separated benchmark names of the suite, or 'all'. Default: all.")
@click.option("--out", default="runs/domains", show_default=True, help="Folder to write the gallery PNGs into.")
@click.option("--samples", default="4", show_default=True, metavar="N",
              help="Images per domain: the first N of its test split.")
@click.option("--data-root", type=click.Path(file_okay=False),
              help="Root folder of the real datasets (suite dg5); sets data.root. Prepared datasets are read from "
                   "$KDBENCH_DATA_CACHE (default ~/.cache/kdbench/data) or from under the root.")
@user_errors
def domains(suite, benchmarks, out, samples, data_root) -> None:
    """One gallery PNG per benchmark: sample images of the source and every target with their label maps."""
    from kdbench.registry import Registry
    from kdbench.report.gallery import collect, parse_samples, write_gallery
    from kdbench.resolve import check_data_root, check_writable, resolve_config

    count = parse_samples(samples)
    cfg, suite_obj = resolve_config(None, {"suite": suite, "data": {"root": data_root} if data_root else None})
    names = _csv(benchmarks) if benchmarks is not None else ["all"]
    if not names:
        raise UserError("--benchmarks names nothing; give at least one name or 'all'")
    bench_names = Registry("benchmark").resolve(names, list(suite_obj.benchmarks))
    check_data_root(cfg, suite_obj, bench_names)
    galleries = collect(cfg, suite_obj, bench_names, count)
    out_dir = Path(out)
    check_writable(out_dir)
    for gallery in galleries:
        click.echo(f"wrote {write_gallery(gallery, out_dir)}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
