"""The one exception type for user mistakes: the CLI prints its message on one line and exits non-zero."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user (a name, a file, a value): the message names what is wrong and what is valid."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """``" did you mean 'x'?"`` for the valid name closest to a near miss (``gkd_mse`` -> ``gkd-mse``), else ``""``;
    for the middle of a one-line error."""
    candidates = [str(v) for v in valid]
    if name in candidates:
        return ""
    folded = {c.lower().replace("_", "-"): c for c in candidates}
    key = str(name).lower().replace("_", "-")
    if key in folded and folded[key] != name:
        return f" did you mean {folded[key]!r}?"
    close = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.75)
    return f" did you mean {folded[close[0]]!r}?" if close else ""
