"""The reference formulations ``make bench`` compares the package with (benchmarks/naive.py) compute
what the package computes: the dense-matrix random walk (IRNet's formulation) equals
:func:`wsss_edu.irnet.random_walk`'s pair route on a small image, and the all-pairs dense energy
equals :func:`wsss_edu.rrm.dense_energy_loss`'s chunked one, value and gradient. Also the bench's
figure recorder (benchmarks/ratio.py): ratios, the table and the JSON."""

import json
import sys
from pathlib import Path

import pytest
import torch

# benchmarks/ is a folder of the repository, not of the package: importable from the root, which
# `python -m pytest` (make test) puts on the path and a bare `pytest` does not
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import naive, ratio  # noqa: E402
from wsss_edu import irnet, rrm


def test_the_dense_transition_matrix_is_column_stochastic_and_local():
    torch.manual_seed(0)
    b = torch.rand(7, 9, dtype=torch.float64) * 0.5
    t = naive.dense_transition(b, radius=3)
    assert torch.allclose(t.sum(0), torch.ones(63, dtype=torch.float64))
    # pixel 0 = (0, 0) reaches only pixels within radius 3 (dy² + dx² < 9)
    reach = t[:, 0].view(7, 9) > 0
    ys, xs = torch.nonzero(reach, as_tuple=True)
    assert int((ys**2 + xs**2).max()) < 9 and bool(reach[0, 0])


@pytest.mark.parametrize("path", ["thick", "thin"])
def test_the_dense_walk_equals_the_pair_walk(path):
    torch.manual_seed(1)
    b = torch.rand(9, 11, dtype=torch.float64) * 0.6
    cams = torch.rand(3, 9, 11, dtype=torch.float64)
    ref = naive.dense_walk(cams, b, radius=4, beta=10.0, exp_times=5, path=path)
    ours = irnet.random_walk(cams, b, radius=4, beta=10.0, exp_times=5, max_dense=0, path=path)
    assert ref.abs().max() > 0.05  # the walk leaves something to compare
    assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-12)


def test_the_squaring_rows_are_rows_of_the_square():
    t = torch.rand(40, 40, dtype=torch.float64)
    out = torch.zeros_like(t)
    naive.squaring_rows(t, 7, out)
    assert torch.allclose(out[:7], (t @ t)[:7]) and not out[7:].any()


@pytest.mark.parametrize("with_labels", [False, True])
def test_the_all_pairs_energy_equals_the_chunked_one(with_labels):
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 9, 10, dtype=torch.float64)
    img = torch.rand(2, 3, 9, 10, dtype=torch.float64) * 255
    lab = torch.randint(0, 4, (2, 9, 10))
    lab[:, ::3] = rrm.IGNORE
    labels = lab if with_labels else None

    a = logits.clone().requires_grad_(True)
    ours = rrm.dense_energy_loss(a.softmax(1), img, labels, sigma_xy=5.0, chunk=17)
    ours.backward()
    b = logits.clone().requires_grad_(True)
    ref = naive.naive_energy(b.softmax(1), img, labels, sigma_xy=5.0)
    ref.backward()
    assert float(ref.detach()) > 1e-3
    assert torch.allclose(ours, ref, rtol=1e-10)
    assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("gigabytes", [0.5, 3, 16])
def test_the_naive_energy_is_scaled_from_the_largest_side_that_fits(gigabytes):
    from benchmarks.test_bench_rrm import naive_side

    side, limit = naive_side(gigabytes), gigabytes * 2**30
    assert naive.naive_energy_bytes(side**2) <= limit < naive.naive_energy_bytes((side + 1) ** 2)


def test_the_recorder_computes_ratios_and_writes_the_table(tmp_path):
    rec = ratio.Recorder()
    rec.record("walk time", 2.0, "s", 8.0, "dense T")
    rec.record("speed-up", 1.5, "x", 2, "N = 2", ratio=0.75, note="parallel efficiency")
    rec.record("naive", 3.0, "s", None, "not run")
    rows = rec.rows()
    assert [r["ratio"] for r in rows] == [0.25, 0.75, None]
    table = rec.table()
    assert "walk time" in table and "0.25" in table and "dense T" in table
    path = rec.write_json(tmp_path / "bench" / "bench.json", meta={"cores": 2})
    data = json.loads(path.read_text())
    assert data["meta"] == {"cores": 2} and data["figures"] == rows


def test_the_recorder_refuses_a_figure_without_a_reference_name():
    with pytest.raises(ValueError, match="reference_name"):
        ratio.Recorder().record("x", 1.0, "s", 2.0, "")
