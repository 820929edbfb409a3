"""The no-distillation baseline."""

from __future__ import annotations

import torch

from kdbench.method import Batch, Method, Stage
from kdbench.models.segmentor import SegOutput


class StudentOnly(Method):
    """No distillation: the student trained on labelled source data with cross-entropy (the baseline row).

    Search space: none; the method has no hyper-parameters of its own, so it is tuned over nothing.
    """

    defaults = {}
    search_space = {}
    reference = "baseline"

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        return {"task": self.task_loss(student_out, batch)}
