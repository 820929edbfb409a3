"""``kdbench report``: paper tables, plots and ``report.md`` from run records (see ``document``)."""

from kdbench.report import grids  # noqa: F401  (registers the qualitative grids beside figures.py's plots)
from kdbench.report.document import FORMATS, Report, write_report

__all__ = ["FORMATS", "Report", "write_report"]
