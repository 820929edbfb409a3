"""Helpers for tests and benchmarks of kdbench and of its plugins: tiny datasets in the real on-disk formats
(``fixtures``, ``raw_fixtures``), random weights in the official file formats (``weights``), a method's training
step ready to time or count FLOPs of (``workloads``) and the side-by-side timer (``timing``)."""
