"""Helpers for tests of kdbench and of its plugins: tiny datasets in the real on-disk formats (``fixtures``)."""
