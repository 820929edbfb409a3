"""mIoU from a confusion matrix, checked against values worked out by hand."""

import math

import torch

from kdbench.engine.metrics import confusion_matrix, iou_per_class, mean_iou


def test_confusion_matrix_counts_and_ignores_255():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_iou_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])
    iou = iou_per_class(confusion_matrix(pred, target, 3))
    # class 0: TP 1, FP 1 (a 2 predicted 0), FN 1 (a 0 predicted 1) -> 1/3
    # class 1: TP 2, FP 1, FN 0 -> 2/3;  class 2: TP 1, FP 0, FN 1 -> 1/2
    assert torch.allclose(iou, torch.tensor([1 / 3, 2 / 3, 1 / 2], dtype=torch.float64))
    assert math.isclose(mean_iou(confusion_matrix(pred, target, 3)), (1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_absent_class_is_excluded_but_false_positive_class_counts_zero():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 2])  # class 2 never present, predicted once; class 3 neither
    iou = iou_per_class(confusion_matrix(pred, target, 4))
    assert iou[0] == 1.0 and iou[1] == 0.5 and iou[2] == 0.0 and math.isnan(iou[3])
    assert math.isclose(mean_iou(confusion_matrix(pred, target, 4)), (1 + 0.5 + 0) / 3)


def test_accumulating_over_batches_equals_one_pass():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (6, 8, 8), generator=gen)
    pred = torch.randint(0, 5, (6, 8, 8), generator=gen)
    whole = confusion_matrix(pred, target, 5)
    parts = confusion_matrix(pred[:2], target[:2], 5) + confusion_matrix(pred[2:], target[2:], 5)
    assert torch.equal(whole, parts)
    # the mean of per-batch mIoUs is NOT the domain mIoU, which is why the evaluator accumulates
    per_batch = [mean_iou(confusion_matrix(pred[i:i + 1], target[i:i + 1], 5)) for i in range(6)]
    assert not math.isclose(sum(per_batch) / 6, mean_iou(whole))


def test_label_outside_table_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 3)
