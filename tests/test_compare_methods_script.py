"""scripts/compare_methods.py: its Welch interval, computed from a report CSV's means, stds and counts, equals the
report's own Δ interval computed from the seeds' values; a missing row is one line on stderr and exit status 1."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kdbench.report.significance import welch_from_summary, welch_interval

ROOT = Path(__file__).parents[1]
EXPECTED = ROOT / "tests" / "fixtures" / "report" / "expected"


def compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_methods.py"), *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_the_interval_from_summaries_is_the_reports_interval_from_seeds():
    result = compare(str(EXPECTED), "gkd-no-cls", "kd (temperature=1.0)")
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(EXPECTED / "mini-f2l-647ad1.csv")
    reported = frame[(frame.method == "gkd-no-cls") & (frame.column == "Δ best baseline")].iloc[0]
    assert (reported.ci_low, reported.ci_high) == pytest.approx((5.557, 12.193))  # the report's, from the seeds
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("| mini-f2l-647ad1 ")]
    assert line == ("| mini-f2l-647ad1 | 70.5 ± 0.7 | 34.2 ± 0.2 | 300 | 73.8 ± 0.0 | 25.4 ± 0.5 | 300 "
                    "| +8.9 [+5.6, +12.2] |")
    assert "31bc8b" not in result.stdout, "a table without both rows is left out"


def test_summary_and_sample_forms_agree():
    a, b = [41.0, 44.5, 39.2], [36.1, 37.0, 35.2, 36.6]
    s = pd.Series(a).std(), pd.Series(b).std()
    by_summary = welch_from_summary(sum(a) / 3, s[0], 3, sum(b) / 4, s[1], 4)
    by_samples = welch_interval(a, b)
    assert (by_summary.low, by_summary.high, by_summary.df) == pytest.approx(
        (by_samples.low, by_samples.high, by_samples.df), rel=1e-12)
    assert welch_from_summary(1.0, 0.5, 1, 0.0, 0.5, 3) is None


def test_rows_not_in_any_table_are_one_line_and_exit_1(tmp_path):
    missing = compare(str(EXPECTED), "gkd", "no-such-method")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().count("\n") == 0 and "'no-such-method'" in missing.stderr
    empty = compare(str(tmp_path), "gkd", "kd")
    assert empty.returncode == 1 and "no report tables" in empty.stderr
