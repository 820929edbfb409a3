"""One namespace for what a suite's benchmarks name as a domain: a synthetic domain (``kdbench.data.domains``)
or a real dataset of the catalog (``kdbench.data.real.catalog``), told apart by name."""

from __future__ import annotations

from kdbench.data.domains import DOMAINS
from kdbench.errors import UserError


def is_real(name: str) -> bool:
    if name in DOMAINS:
        return False
    from kdbench.data.real.catalog import DATASETS

    return name in DATASETS


def check_domain(name: str) -> None:
    """A UserError naming every known domain and dataset when ``name`` is neither."""
    if name in DOMAINS:
        return
    from kdbench.data.real.catalog import DATASETS

    if name not in DATASETS:
        raise UserError(f"unknown domain {name!r}; synthetic domains: {', '.join(sorted(DOMAINS))}; "
                        f"real datasets: {', '.join(sorted(DATASETS))}")


def domain_classes(name: str) -> tuple[str, ...]:
    """The class names of a domain's label space, in label order."""
    check_domain(name)
    if name in DOMAINS:
        return DOMAINS[name].classes
    from kdbench.data.real.catalog import get_dataset

    return tuple(get_dataset(name).classes)
