"""The synthetic world: deterministic, label-preserving domain shifts, shared layouts across looks."""

import numpy as np
import torch

from kdbench.data.domains import DOMAINS, get_domain, sample_randomised_style
from kdbench.data.synthetic import PretrainStream, make_split


def test_splits_are_deterministic():
    a = make_split(get_domain("game"), "val", 6, 32)
    b = make_split(get_domain("game"), "val", 6, 32)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_domain_shift_changes_appearance_never_labels():
    source = make_split(get_domain("city"), "val", 8, 32)
    for target in ("night", "snow", "fog", "rain"):
        shifted = make_split(get_domain(target), "val", 8, 32)
        assert torch.equal(shifted.labels, source.labels), target
        assert (shifted.images.float() - source.images.float()).abs().mean() > 10, target
    irrg = make_split(get_domain("aerial-irrg"), "val", 8, 32)
    assert torch.equal(irrg.labels, make_split(get_domain("aerial-rgb"), "val", 8, 32).labels)


def test_train_and_val_differ_and_every_class_appears():
    train = make_split(get_domain("game"), "train", 64, 32)
    val = make_split(get_domain("game"), "val", 64, 32)
    assert not torch.equal(train.labels[:8], val.labels[:8])
    assert set(train.labels.unique().tolist()) == set(range(len(train.classes)))


def test_randomised_styles_keep_away_from_excluded_targets():
    excluded = [DOMAINS[n] for n in ("night", "city")]
    rng = np.random.default_rng(0)
    for _ in range(20):
        style = sample_randomised_style("urban", rng, excluded, min_distance=0.2)
        for d in excluded:
            for c, colour in style.palette.items():
                shown = np.array(colour)[list(style.bands)]
                target = np.array(d.style.palette[c])[list(d.style.bands)]
                assert np.linalg.norm(shown - target) >= 0.2


def test_pretrain_stream_stacks_label_spaces():
    stream = PretrainStream("randomised", ("urban", "aerial"), 16, 4, seed=0)
    images, labels = stream.next_batch()
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8
    assert len(stream.classes) == 12
    assert int(labels[:2].max()) < 6 <= int(labels[2:].min())
