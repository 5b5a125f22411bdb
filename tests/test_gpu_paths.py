"""The GPU paths, tried on the CPU: the autocast dtype chosen per device (bfloat16, or float16 with
loss scaling on a GPU without bfloat16 such as Colab's T4), the float16 training step with its
gradient scaler (forced on the CPU) and its resume, the warning for PROFILE='full' on a CPU, and
the Colab install cell (its text, where it is inserted, what it runs)."""

import sys
import types
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from wsss_edu import colab, data, nbtools, params, train
from wsss_edu.errors import DataFileError, ParameterError
from wsss_edu.io import write_digest

# --- the dtype per device ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "capability, want",
    [
        ((7, 5), torch.float16),  # T4 (Colab)
        ((7, 0), torch.float16),  # V100
        ((6, 0), torch.float16),  # P100
        ((8, 0), torch.bfloat16),  # A100
        ((8, 6), torch.bfloat16),  # RTX 30xx
        ((9, 0), torch.bfloat16),
    ],
)  # H100
def test_amp_dtype_follows_the_gpus_compute_capability(monkeypatch, capability, want):
    seen = []
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(
        torch.cuda, "get_device_capability", lambda d=None: seen.append(d) or capability
    )
    # torch's own check counts bfloat16 emulated in float32 (a T4) as supported: not followed
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert train.amp_dtype("cuda") is want
    assert train.amp_dtype(torch.device("cuda", 1)) is want
    assert seen[-1] == torch.device("cuda", 1)  # the capability of the device asked about


def test_amp_dtype_is_none_off_cuda_and_bfloat16_on_rocm(monkeypatch):
    assert train.amp_dtype("cpu") is None and train.amp_dtype(torch.device("cpu")) is None
    assert train.amp_dtype("mps") is None
    monkeypatch.setattr(torch.version, "hip", "6.0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    assert train.amp_dtype("cuda") is torch.bfloat16


def test_autocast_helper_enters_the_chosen_dtype_or_none():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with train.autocast("cpu"):  # amp_dtype('cpu') is None: float32
        assert (a @ b).dtype == torch.float32
    with train.autocast("cpu", torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
    with train.autocast("cpu", torch.float16):
        assert (a @ b).dtype == torch.float16
    assert train.dtype_name(None) == "off" and train.dtype_name(torch.float16) == "float16"


def test_the_scaler_is_on_for_float16_only():
    assert train.make_scaler("cpu", torch.float16).is_enabled()
    assert not train.make_scaler("cpu", torch.bfloat16).is_enabled()
    assert not train.make_scaler("cpu", None).is_enabled()


# --- the float16 training step ----------------------------------------------------------------


def _loader(n=16, size=12):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (n, size, size, 3)).astype(np.uint8)
    mask = (img[..., 0] > 127).astype(np.uint8)
    return torch.utils.data.DataLoader(
        data.ArrayDataset({"image": img, "mask": mask}), batch_size=4
    )


def _net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    return net, torch.optim.SGD(net.parameters(), lr=0.1)


def _reference(loader, epochs, dtype, skip=()):
    """An independent loop: autocast in ``dtype`` (None: none), the plain (unscaled) backward and step; the
    batches numbered in ``skip`` (0-based over the whole run) take no step."""
    net, opt = _net()
    k = 0
    for _ in range(epochs):
        for batch in loader:
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                loss = train.cross_entropy_loss(net, batch)
            opt.zero_grad()
            loss.backward()
            if k not in skip:
                opt.step()
            k += 1
    return net


def _fixed_scaler(monkeypatch, init_scale, growth_interval=10**6):
    monkeypatch.setattr(
        train,
        "make_scaler",
        lambda device, dtype: torch.amp.GradScaler(
            "cpu",
            init_scale=init_scale,
            growth_interval=growth_interval,
            enabled=dtype == torch.float16,
        ),
    )


def _weights(net):
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("scale", [1.0, 16.0])
def test_float16_with_a_scaled_loss_trains_as_the_unscaled_loop(monkeypatch, capsys, scale):
    """Scaling the loss by a power of two and unscaling the gradients before the step changes
    nothing but float16's underflow of the tiniest gradients: the weights are the unscaled loop's,
    to well under the training's own change of them (a step taken on the still-scaled gradients
    would move them ``scale`` times too far)."""
    _fixed_scaler(monkeypatch, scale)
    loader = _loader()
    net, opt = _net()
    start = _weights(net)
    hist = train.fit(
        net,
        loader,
        train.cross_entropy_loss,
        opt,
        2,
        "cpu",
        amp=torch.float16,
        progress=False,
        desc="probe",
    )
    ref = _reference(loader, 2, torch.float16)
    moved = max(float((b - a).abs().max()) for a, b in zip(start, _weights(ref)))
    assert moved > 1e-2
    for a, b in zip(_weights(net), _weights(ref)):
        assert float((a - b).abs().max()) < 1e-4 * moved
    assert hist["autocast"] == ["float16", "float16"] and hist["loss_scale"] == [scale, scale]
    assert "probe: autocast float16 on cpu, loss scaled" in capsys.readouterr().out


def test_a_step_with_an_inf_gradient_is_skipped_and_the_scale_halves(monkeypatch):
    _fixed_scaler(monkeypatch, 16.0)
    loader = _loader()
    calls = []

    def loss_fn(model, batch):  # the second batch's loss (and gradient) overflows
        calls.append(1)
        loss = train.cross_entropy_loss(model, batch)
        return loss * float("inf") if len(calls) == 2 else loss

    net, opt = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = train.fit(net, loader, loss_fn, opt, 1, "cpu", amp=torch.float16, progress=False)
    ref = _reference(loader, 1, torch.float16, skip={1})
    for a, b in zip(_weights(net), _weights(ref)):
        assert float((a - b).abs().max()) < 1e-5
    assert hist["loss_scale"] == [8.0]


def test_float32_and_bfloat16_runs_take_no_scaler_and_say_their_dtype(capsys):
    loader = _loader()
    net, opt = _net()
    hist = train.fit(net, loader, train.cross_entropy_loss, opt, 1, "cpu", progress=False)
    assert hist["autocast"] == ["off"] and "loss_scale" not in hist
    assert capsys.readouterr().out == ""  # the CPU run's output is unchanged
    ref = _reference(loader, 1, None)
    assert all(torch.equal(a, b) for a, b in zip(_weights(net), _weights(ref)))
    net, opt = _net()
    hist = train.fit(
        net, loader, train.cross_entropy_loss, opt, 1, "cpu", amp=torch.bfloat16, progress=False
    )
    assert hist["autocast"] == ["bfloat16"] and "loss_scale" not in hist
    with pytest.raises(ParameterError, match="torch.float16"):
        train.fit(net, loader, train.cross_entropy_loss, opt, 1, "cpu", amp="fp16", progress=False)


def test_a_float16_run_resumes_at_its_loss_scale(monkeypatch, tmp_path):
    """A start at 2**20 overflows and halves, growth every 3 good steps: the scale at epoch 2 is
    neither the initial one nor constant; a resume must continue from it to reach the same weights."""
    _fixed_scaler(monkeypatch, 2.0**20, growth_interval=3)
    loader = _loader()
    fit = lambda net, opt, epochs, ck=None: train.fit(  # noqa: E731
        net,
        loader,
        train.cross_entropy_loss,
        opt,
        epochs,
        "cpu",
        amp=torch.float16,
        checkpoint=ck,
        progress=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lr_scheduler-free; torch warns of skipped steps
        full_net, full_opt = _net()
        full = fit(full_net, full_opt, 4)
        ck = tmp_path / "run.ckpt"
        fit(*_net(), 2, ck)
        state = torch.load(ck, weights_only=True)
        assert state["scaler"]["scale"] == full["loss_scale"][1] != 2.0**20
        net, opt = _net(seed=5)  # a fresh process: other weights, a fresh scaler
        resumed = fit(net, opt, 4, ck)
    assert resumed["loss_scale"] == full["loss_scale"]
    assert resumed["autocast"] == ["float16"] * 4
    for a, b in zip(_weights(net), _weights(full_net)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_a_checkpoint_with_a_malformed_scaler_state_is_refused(tmp_path):
    net, _ = _net()
    path = tmp_path / "bad.ckpt"
    torch.save({"model": net.state_dict(), "epoch": 0, "scaler": 5.0}, path)
    write_digest(path)
    with pytest.raises(DataFileError, match="gradient scaler"):
        train.read_checkpoint(path, net)


# --- PROFILE='full' on a CPU ------------------------------------------------------------------


def test_full_profile_on_a_cpu_warns_naming_the_fix(tmp_path):
    with pytest.warns(params.SlowProfileWarning) as got:
        params.setup("nb", OUTPUT_DIR=str(tmp_path), PROFILE="full", DEVICE="cpu", verbose=False)
    text = str(got[0].message)
    assert len(got) == 1 and 'PROFILE = "quick"' in text and "GPU" in text and "slow" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error", params.SlowProfileWarning)
        params.setup("nb", OUTPUT_DIR=str(tmp_path), PROFILE="quick", DEVICE="cpu", verbose=False)
    assert params.slow_profile_message("full", torch.device("cuda")) is None
    assert params.slow_profile_message("full", torch.device("mps")) is None
    assert params.slow_profile_message("quick", torch.device("cpu")) is None


# --- the Colab install cell -------------------------------------------------------------------

SOURCE = """\
# %% [markdown]
# # A notebook

# %% tags=["parameters"]
DATASET = "toy"
SEED = 0

# %% [markdown]
# Setup:

# %%
import numpy as np
from wsss_edu import params

run = params.setup("nb", DATASET)
"""


def test_the_install_cell_goes_after_the_parameters_cell_and_before_the_import():
    out = colab.add_install_cell(SOURCE)
    lines = out.splitlines()
    params_at = lines.index('# %% tags=["parameters"]')
    cell_at = lines.index(colab.CELL_HEADER)
    import_at = lines.index("from wsss_edu import params")
    assert params_at < cell_at < import_at
    # no other cell header between the parameters cell and the install cell
    assert not [x for x in lines[params_at + 1 : cell_at] if x.startswith("# %%")]
    assert colab.add_install_cell(out) == out  # twice: unchanged
    assert colab.remove_install_cell(out) == SOURCE  # and it is all that was added
    body = out[out.index(colab.CELL_HEADER) + len(colab.CELL_HEADER) + 1 :].split("\n# %%")[0]
    assert body.strip() == colab.INSTALL_CELL.strip()


def test_jupytext_reads_the_cell_tagged_and_hidden(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.reads(colab.add_install_cell(SOURCE), fmt="py:percent")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata.get("tags") == ["parameters"]
    assert code[1].metadata == {"tags": ["colab"], "jupyter": {"source_hidden": True}}
    assert code[1].source.strip() == colab.INSTALL_CELL.strip()
    assert "from wsss_edu import params" in code[2].source


@pytest.mark.parametrize(
    "bad, match",
    [
        (SOURCE.replace(' tags=["parameters"]', ""), "not tagged 'parameters'"),
        (
            SOURCE.replace("SEED = 0", "SEED = 0\nfrom wsss_edu import io"),
            "imports wsss_edu before",
        ),
    ],
)
def test_a_source_the_cell_cannot_go_into_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        colab.add_install_cell(bad, "nb.py")


def test_the_cli_adds_the_cell_to_files(tmp_path, capsys):
    a = tmp_path / "a.py"
    a.write_text(SOURCE)
    assert colab.main(["add", str(a)]) == 0 and colab.CELL_HEADER in a.read_text()
    assert colab.main(["add", str(a)]) == 0 and capsys.readouterr().out.count("added") == 1
    assert colab.main([]) == 2


def _run_cell(monkeypatch, on_colab: bool):
    calls = []
    monkeypatch.setattr("subprocess.check_call", lambda cmd: calls.append(cmd) or 0)
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    namespace = {}
    exec(compile(colab.INSTALL_CELL, "colab-cell", "exec"), namespace)
    assert not [k for k in namespace if k.isupper()]  # binds no name the parameter check would flag
    return calls


def test_the_install_cell_is_a_no_op_outside_colab(monkeypatch, capsys):
    assert _run_cell(monkeypatch, False) == [] and capsys.readouterr().out == ""
    assert not colab.is_colab()


def test_the_install_cell_pip_installs_on_colab(monkeypatch, capsys):
    monkeypatch.delenv(colab.SOURCE_ENV, raising=False)
    assert _run_cell(monkeypatch, True) == [
        [sys.executable, "-m", "pip", "install", "-q", "wsss_edu[notebooks]"]
    ]
    assert colab.is_colab() and "pip install wsss_edu[notebooks]" in capsys.readouterr().out
    url = "git+https://github.com/someone/wsss_edu"
    monkeypatch.setenv(colab.SOURCE_ENV, url)
    assert _run_cell(monkeypatch, True)[0][-1] == f"wsss_edu[notebooks] @ {url}"
    monkeypatch.setenv(colab.SOURCE_ENV, "/content/wsss_edu")
    assert _run_cell(monkeypatch, True)[0][-1] == "/content/wsss_edu"


def test_student_versions_keep_the_install_cell():
    cell = {
        "cell_type": "code",
        "id": "c1",
        "execution_count": 3,
        "outputs": [],
        "metadata": {"tags": ["colab"], "jupyter": {"source_hidden": True}},
        "source": colab.INSTALL_CELL,
    }
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "id": "p",
                "metadata": {"tags": ["parameters"]},
                "execution_count": 1,
                "outputs": [],
                "source": "SEED = 0",
            },
            cell,
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    kept = [
        c
        for c in nbtools.student_version(nb, "nb.ipynb")["cells"]
        if "colab" in c["metadata"].get("tags", [])
    ]
    assert len(kept) == 1 and kept[0]["source"].strip() == colab.INSTALL_CELL.strip()
    assert kept[0]["metadata"]["jupyter"] == {"source_hidden": True}
