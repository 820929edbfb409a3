"""The real datasets' validation images: a fixed slice of each dataset's labelled training split (issue 15).

One rule for every dataset, whatever its role in a benchmark: of the training split's sorted list (the order every
loader reads it in, mmseg's: by image path), the **last** :func:`val_count` images are its validation images and
only the others are ever trained on. As a benchmark's source this slice is its *source-val*; as a target, its
*target-val*, drawn from the target's own training split and so disjoint from its test (official validation)
images by construction. A dataset that is a source in one benchmark and a target in another (Cityscapes) has one
slice, the same in both roles: held out of training where it is the source, scored as target-val where it is a
target.

Why a contiguous block and not every k-th image: a sorted list groups images by city (Cityscapes), sequence
(ACDC, GTA5's frame numbers) or tile (ISPRS patches), as the official splits do, so a block keeps neighbouring
frames and patches of the training images out of validation (every k-th image would put each validation image
beside near-duplicates it was trained on); at most one city, sequence or tile straddles the boundary. Why the end
of the list: ``data.train_images`` and GTA5's in-domain score (``eval.images``) take the *first* N images, which
the slice leaves as they were. Datasets with the same file keys (Potsdam RGB and IRRG patches of the same tiles)
get the same slice, so Potsdam IRRG's target-val tiles are tiles the RGB source never trained on. Mapillary, never
trained on, gets the same slice of its raw training list, cut by ``data prepare`` (which converts only those images;
:mod:`~kdbench.data.real.prepare_mapillary`); its loader reads the converted slice whole (the catalog's
``held_out``), since cutting the converted 500 again would hold out 50.

The size is a tenth of the split, rounded up, at most :data:`VAL_MAX` images (validation is scored in every run,
so it costs no more than a target's test split), at least one and never the whole split (a split of fewer than two
images has none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

#: one image in this many of a training split is held out (rounded up) ...
VAL_SHARE = 10
#: ... but never more than this many
VAL_MAX = 500

T = TypeVar("T")

#: the rule in words, for the identity of what is trained on real data (runs, teacher heads): a change of the
#: rule must retrain them
RULE = f"last 1/{VAL_SHARE} of each training list, at most {VAL_MAX}"


def val_count(n: int) -> int:
    """How many of a training split of ``n`` images are held out for validation (0 when ``n`` < 2)."""
    if n < 2:
        return 0
    return min(-(-n // VAL_SHARE), VAL_MAX, n - 1)


def hold_out(items: Sequence[T]) -> tuple[list[T], list[T]]:
    """``(train, val)`` of a training split's sorted list: ``val`` is its last :func:`val_count` items."""
    cut = len(items) - val_count(len(items))
    return list(items[:cut]), list(items[cut:])
