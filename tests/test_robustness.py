"""Real-data robustness (issue 19): a batch whose crops are all ignore pixels trains on as a zero task loss."""

import pytest
import torch

from kdbench.config import TrainConfig
from kdbench.engine.runtime import resolve_runtime
from kdbench.engine.trainer import train_method
from kdbench.method import IGNORE_INDEX, Batch, Method
from kdbench.models.mask2former import Mask2FormerHead
from kdbench.models.segmentor import SegOutput
from kdbench.testing.methods import build_method, tiny_batch


def test_an_all_ignore_batch_gives_a_zero_task_loss_with_zero_gradient():
    method = build_method("student-only")
    batch = tiny_batch(method)
    batch.labels[:] = IGNORE_INDEX
    loss = method.task_loss(method.student(batch.images), batch)
    assert float(loss.detach()) == 0.0
    loss.backward()
    grads = [p.grad for p in method.student.parameters() if p.grad is not None]
    assert grads and all(float(g.abs().sum()) == 0.0 for g in grads)
    unguarded = torch.nn.functional.cross_entropy(method.student(batch.images).logits, batch.labels,
                                                  ignore_index=IGNORE_INDEX)
    assert torch.isnan(unguarded), "the plain mean over no pixels is NaN: what the guard is for"


def test_one_labelled_pixel_is_the_ordinary_cross_entropy():
    method = build_method("student-only")
    batch = tiny_batch(method)
    batch.labels[:] = IGNORE_INDEX
    batch.labels[1, 3, 4] = 2
    logits = method.student(batch.images).logits
    want = -torch.log_softmax(logits[1, :, 3, 4].float(), dim=0)[2]
    assert torch.allclose(method.task_loss(SegOutput(logits=logits, features=[], tokens=None), batch), want)


def test_mask2former_terms_are_zero_on_an_all_ignore_batch():
    torch.manual_seed(0)
    head = Mask2FormerHead.tiny([24] * 4, num_classes=5, level_strides=[16] * 4)
    out = head([torch.randn(2, 24, 4, 4) for _ in range(4)])
    labels = torch.full((2, 16, 16), IGNORE_INDEX)
    unguarded = float(head.loss(out, labels)["cls"].detach())
    assert unguarded > 0, "unguarded, the class term trains every query to no-object"
    seg_out = SegOutput(logits=out.logits, features=[], tokens=None, head_loss=lambda lab: head.loss(out, lab))
    assert float(Method.task_loss(seg_out, Batch(torch.zeros(2, 3, 64, 64), labels)).detach()) == 0.0


@pytest.mark.parametrize("method_name", ["student-only", "cwd", "gkd"])
def test_a_run_goes_on_through_an_all_ignore_batch(method_name):
    method = build_method(method_name)

    def batches(stage):
        step = 0
        while True:
            batch = tiny_batch(method, seed=step)
            if step == 1:
                batch.labels[:] = IGNORE_INDEX
            step += 1
            yield batch if stage.data == "source" else Batch(batch.images, None)

    results = train_method(method, batches, TrainConfig(steps=3, batch_size=2, log_every=1),
                           resolve_runtime("cpu", "off"))
    assert all(r.steps == 3 for r in results) and all(
        torch.isfinite(torch.tensor(v)) for r in results for v in r.last.values())


OWN_LEFTOVERS = [".resume.pt.k2j4h6g8.tmp", ".records.jsonl.a1b2c3d4.tmp", ".metrics.jsonl.zz_9y8x7.tmp",
                 ".stage-task.pt.q1w2e3r4.tmp", ".done.m0n9b8v7.tmp"]
DECOYS = [".notes.txt.abcd1234.tmp", "resume.pt.abcd1234.tmp", ".resume.pt.tmp", ".resume.pt.ABCD1234.tmp",
          "notes.txt", "my.tmp", ".resume.pt.abc.tmp"]


def test_a_run_dir_loses_its_own_stale_temporaries_and_nothing_else(tmp_path):
    from kdbench.results import RunDir

    for name in OWN_LEFTOVERS + DECOYS:
        (tmp_path / name).write_text("x")
    removed = RunDir(tmp_path).remove_stale_temporaries()
    assert sorted(p.name for p in removed) == sorted(OWN_LEFTOVERS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DECOYS)


def test_a_rerun_of_an_unfinished_run_clears_the_leftovers_of_a_killed_save(tmp_path):
    from click.testing import CliRunner

    from kdbench.cli import cli

    out = tmp_path / "out"
    args = ["run", "--suite", "smoke", "--benchmarks", "rgb2irrg", "--pairs", "tiny-f2f", "--methods", "kd",
            "--out", str(out)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    run = next(p.parent for p in out.rglob("records.jsonl") if "/kd/" in str(p))
    (run / "done").unlink()  # as if killed after the last checkpoint's temporary file was half written
    for name in OWN_LEFTOVERS[:2] + DECOYS[:2]:
        (run / name).write_text("half a file")
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and (run / "done").is_file()
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) == sorted(DECOYS[:2])
