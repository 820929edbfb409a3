"""``kdbench.testing.methods``, the checks a plugin's tests import: every built-in method passes the gradient-flow
check on a ViT and a CNN student, and the check catches the mistakes it exists for."""

import re

import pytest
import torch
from torch import nn

from kdbench.method import METHODS, Method
from kdbench.testing.methods import TINY_CNN_STUDENT, TINY_VIT_STUDENT, build_method, check_gradient_flow


def cases():
    for name in METHODS.names():
        cls = METHODS.get(name)
        for student in (TINY_VIT_STUDENT, TINY_CNN_STUDENT):
            if cls.kind_problem("student", "cnn" if student == TINY_CNN_STUDENT else "vit") is None:
                yield name, student


@pytest.mark.parametrize(("name", "student"), list(cases()))
def test_every_method_trains_its_student_and_own_modules_and_never_the_teacher(name, student):
    terms = check_gradient_flow(build_method(name, student=student))
    assert terms and all(torch.isfinite(torch.tensor(v)) for v in terms.values())


class _UnusedAdapter(Method):
    """An adapter built but never used: its parameters can never learn."""

    def __init__(self, teacher, student, context, **hp):
        super().__init__(teacher, student, context, **hp)
        self.adapter = nn.Linear(4, 4)

    def loss(self, stage, batch, student_out, teacher_out):
        return {"task": self.task_loss(student_out, batch)}


class _TeacherWithGrad(Method):
    """Calls the teacher itself, outside the trainer's inference mode: the teacher would learn."""

    def loss(self, stage, batch, student_out, teacher_out):
        own = self.teacher(batch.images)
        return {"task": self.task_loss(student_out, batch), "leak": (own.logits - student_out.logits).pow(2).mean()}


class _DetachedStudent(Method):
    """Detaches the student's output before the loss: nothing reaches the backbone."""

    def loss(self, stage, batch, student_out, teacher_out):
        logits = student_out.logits.detach().requires_grad_(True)
        return {"task": nn.functional.cross_entropy(logits, batch.labels, ignore_index=255)}


@pytest.mark.parametrize(("cls", "message"), [
    (_UnusedAdapter, "no gradient reaches the method's own module(s): adapter"),
    (_TeacherWithGrad, "a gradient reached the teacher"),
    (_DetachedStudent, "no gradient reaches the student backbone's input layer (vit.patch_embed.proj)"),
])
def test_the_check_names_what_is_wrong(cls, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_gradient_flow(build_method(cls))
