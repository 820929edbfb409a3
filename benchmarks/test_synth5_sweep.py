"""The issue's speed target: the whole synth5 quick sweep (student-only and kd, all pairs, all benchmarks),
from an empty pretraining cache, in one process. About 10-15 minutes on 2 cores, so it only runs when asked:

    KDBENCH_BENCH_SWEEP=1 .venv/bin/pytest benchmarks/test_synth5_sweep.py --benchmark-enable -s
"""

import os

import pytest
from click.testing import CliRunner

from kdbench.cli import cli


@pytest.mark.skipif(os.environ.get("KDBENCH_BENCH_SWEEP") != "1", reason="set KDBENCH_BENCH_SWEEP=1 to run")
def test_synth5_quick_sweep(benchmark, tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))

    def sweep():
        result = CliRunner().invoke(cli, ["run", "--methods", "student-only,kd", "--pairs", "all", "--preset",
                                          "quick", "--out", str(tmp_path / "out")])
        assert result.exit_code == 0, result.output
        print(result.output)

    benchmark.pedantic(sweep, rounds=1, iterations=1)
