"""Benchmark of the small networks' training on the CPU (figures, not pass/fail): ``make bench``.
For each network of the quick profile, built by the repository's builders — step 1's small
classifier, IRNet's two branches on its frozen stages, the segmenter (DeepLabv3+ on the small
encoder), paper 000's U-Net — a few SGD steps on a batch of 16 toy images of 64 px with its own
loss: images/s, and the FLOP/s those images mean (FLOPs of one forward + backward counted by
``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products, the work that can
run at the peak) as a share of the CPU's peak matrix-multiply throughput, measured in the same
run with the same threads (the best of a few 2048 x 2048 ``torch.mm`` in float32)."""

import time

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from wsss_edu.cam import multilabel_bce_loss
from wsss_edu.data import images_to_tensor
from wsss_edu.irnet import IRNet, backbone_stages, irnet_loss, pair_offsets
from wsss_edu.models import make_segmenter
from wsss_edu.steps.cam_step import ClassifierConfig, make_classifier
from wsss_edu.steps.irnet_step import IRNetConfig
from wsss_edu.steps.segmenter_step import SegmenterConfig, make_model
from wsss_edu.toy import ToyDataset
from wsss_edu.train import cross_entropy_loss

BATCH, SIZE, STEPS = 16, 64, 4
MM_SIDE, MM_REPEATS = 2048, 5


def peak_matmul_gflops(side: int = MM_SIDE, repeats: int = MM_REPEATS) -> float:
    """The best GFLOP/s of ``repeats`` float32 ``torch.mm`` of two ``side`` x ``side`` matrices
    (2 side³ FLOPs each) on this process's torch threads."""
    a, b = torch.randn(side, side), torch.randn(side, side)
    out = torch.empty(side, side)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t)
    return 2 * side**3 / best / 1e9


@pytest.fixture(scope="module")
def peak():
    return peak_matmul_gflops()


@pytest.fixture(scope="module")
def batch():
    ds = ToyDataset("train", n=BATCH, seed=0, size=SIZE)
    s = [ds[i] for i in range(BATCH)]
    mask = torch.as_tensor(np.stack([x["mask"] for x in s])).long()
    return {
        "image": images_to_tensor(np.stack([x["image"] for x in s])),
        "labels": torch.as_tensor(np.stack([x["labels"] for x in s])).float(),
        "mask": mask,
        "relation": mask[:, ::4, ::4].contiguous(),  # relation labels at IRNet's stride 4
        "num_classes": ds.num_classes,
    }


def _classifier(b):
    torch.manual_seed(0)
    return make_classifier(b["labels"].shape[1], ClassifierConfig()), multilabel_bce_loss


def _irnet(b):
    net, _ = _classifier(b)
    cfg = IRNetConfig()
    offsets = pair_offsets(cfg.radius)
    return IRNet(backbone_stages(net), cfg.width), lambda m, x: irnet_loss(m, x, offsets)


def _segmenter(b):
    torch.manual_seed(0)
    return make_model(b["num_classes"], SegmenterConfig()), cross_entropy_loss


def _unet(b):
    torch.manual_seed(0)
    return make_segmenter("unet", b["num_classes"]), cross_entropy_loss


def train_flops(model, loss_fn, b) -> int:
    """FLOPs of one forward + backward of ``loss_fn(model, b)`` (FlopCounterMode's count)."""
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        loss_fn(model, b).backward()
    return counter.get_total_flops()


def images_per_second(model, loss_fn, b, steps: int = STEPS) -> float:
    """Training images/s over ``steps`` SGD steps (after one warm-up step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model, b).backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * b["image"].shape[0] / (time.perf_counter() - t)


@pytest.mark.parametrize(
    "name, build",
    [
        ("step-1 classifier (small CNN)", _classifier),
        ("IRNet branches (frozen small stages)", _irnet),
        ("segmenter (DeepLabv3+ small)", _segmenter),
        ("U-Net (paper 000)", _unet),
    ],
)
def test_training_throughput(figures, peak, batch, name, build):
    model, loss_fn = build(batch)
    model.train()
    flops = train_flops(model, loss_fn, batch) / BATCH
    rate = images_per_second(model, loss_fn, batch)
    figures.record(
        f"train {name}, {BATCH} x {SIZE} px",
        rate * flops / 1e9,
        "GFLOP/s",
        peak,
        f"peak mm, {torch.get_num_threads()} thr",
        note=f"{rate:.0f} img/s x {flops / 1e6:.0f} MFLOP/img",
    )
