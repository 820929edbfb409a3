"""DIST: distillation by inter- and intra-class correlation (Huang et al., NeurIPS 2022), segmentation form."""

from __future__ import annotations

import torch

from kdbench.errors import UserError
from kdbench.method import Batch, Method, Stage
from kdbench.models.segmentor import SegOutput
from kdbench.search import LogUniform

#: added to the product of norms in each correlation's denominator (the official code's ``eps``)
PEARSON_EPS = 1e-8


def pearson_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of two R×D matrices: ``Σ_d x̃_d ỹ_d / (‖x̃‖·‖ỹ‖ + ε)`` with x̃, ỹ the rows
    minus their means and ε = :data:`PEARSON_EPS`; a length-R vector."""
    xc = x - x.mean(dim=1, keepdim=True)
    yc = y - y.mean(dim=1, keepdim=True)
    return (xc * yc).sum(dim=1) / (xc.norm(dim=1) * yc.norm(dim=1) + PEARSON_EPS)


def pixel_probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """B×K×H×W logits -> (B·H·W)×K class probabilities ``softmax(z / τ)``, one row per pixel, in float32."""
    k = logits.shape[1]
    return torch.softmax(logits.float() / temperature, dim=1).permute(0, 2, 3, 1).reshape(-1, k)


def dist_relations(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """DIST's two unweighted terms ``(inter, intra)`` between B×K×H×W logit maps, each already × τ².

    Every pixel of every sample is one prediction: P_s, P_t are the (B·H·W)×K matrices of softmax(z/τ).
    ``inter = τ² (1 − (1/(B·H·W)) Σ_pixels ρ(P_s[pixel, :], P_t[pixel, :]))``: the correlation over the K classes
    of each pixel, averaged over all pixels. ``intra = τ² (1 − (1/K) Σ_c ρ(P_s[:, c], P_t[:, c]))``: the
    correlation of each class's probabilities over all B·H·W pixels of the batch together (not per image),
    averaged over classes. ρ is :func:`pearson_rows`.
    """
    p_s = pixel_probabilities(student_logits, temperature)
    p_t = pixel_probabilities(teacher_logits, temperature)
    scale = temperature * temperature
    inter = 1.0 - pearson_rows(p_s, p_t).mean()
    intra = 1.0 - pearson_rows(p_s.t(), p_t.t()).mean()
    return scale * inter, scale * intra


class DIST(Method):
    """DIST: 1 − Pearson correlation between student and teacher class probabilities, per pixel over classes
    (inter-class) and per class over the batch's pixels (intra-class), plus CE.

    Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022; segmentation form
    of the official code (hunto/DIST_KD, ``segmentation/losses/dist_kd.py``, ``segmentation/train_kd.py``): the
    B×K×H×W logit maps are flattened to (B·H·W)×K, softmaxed over classes, and the loss is
    β·(1 − mean pixel correlation) + γ·(1 − mean class correlation). Loss = CE + τ²·β·inter + τ²·γ·intra, logged
    as ``task``, ``inter`` and ``intra``.

    Defaults β=γ=1, τ=1 (anchors.md §6): the official segmentation loss has β=γ=1 and no temperature (a plain
    softmax, so τ=1 and τ²=1), weighted by ``--lambda-kd`` 1 (``train_kd.py``'s default; the shipped Cityscapes
    scripts set no other). τ and τ² are the classification form's (official classification code, mmrazor's
    ``DISTLoss``), kept so that τ can be tuned.

    Readings and choices:

    * Intra-class relation over the batch: each class's probabilities are correlated over all B·H·W pixels of the
      batch at once, as the official code does (it transposes the (B·H·W)×K matrix); not per image.
    * Resolution: kdbench's logits at the input resolution (both heads' outputs upsampled bilinearly, where CE and
      evaluation run); the official code uses the decoder's 1/8-resolution logits. Correlations are scale-free,
      so the terms' size does not grow with the pixel count.
    * Ignore pixels: every pixel counts, labelled ignore (255) or not, as in the official code (which never reads
      labels in DIST) and in kdbench's ``kd``: the teacher's prediction is defined there too.
    * No auxiliary head: the official ResNet students add 0.4·DIST on their FCN auxiliary head's logits; kdbench's
      heads have no auxiliary output, so only the main logits are distilled.
    * Both terms are bounded: 0 ≤ 1 − ρ ≤ 2, so each weighted term is at most 2·τ²·β (or γ).

    Search space: ``beta`` and ``gamma`` log-uniform [0.3, 3] each (β=γ=1 in the official segmentation and
    ImageNet settings, an effective 2 in mmrazor's ImageNet config (``loss_weight=2``) and CIFAR-100
    re-implementations; ×0.3-×3 around 1); ``temperature`` log-uniform [1, 4] (τ=1 official segmentation, ImageNet
    and mmrazor; τ=4 CIFAR-100 re-implementations).
    """

    defaults = {"beta": 1.0, "gamma": 1.0, "temperature": 1.0}
    search_space = {"beta": LogUniform(0.3, 3.0), "gamma": LogUniform(0.3, 3.0),
                    "temperature": LogUniform(1.0, 4.0)}

    @classmethod
    def teacher_taps(cls, hp) -> frozenset[str]:
        return frozenset({"logits"})

    @classmethod
    def check_hparams(cls, hp) -> None:
        name = cls.registered_name
        for key in ("beta", "gamma"):
            if hp[key] < 0:
                raise UserError(f"method.{name}.{key} must be non-negative, not {hp[key]}")
        if not hp["temperature"] > 0:
            raise UserError(f"method.{name}.temperature must be positive, not {hp['temperature']}")

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        inter, intra = dist_relations(student_out.logits, teacher_out.logits, self.hp["temperature"])
        return {"task": self.task_loss(student_out, batch),
                "inter": self.hp["beta"] * inter, "intra": self.hp["gamma"] * intra}
