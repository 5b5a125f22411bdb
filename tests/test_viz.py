"""The shared figures: what they draw and print."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wsss_edu import viz  # noqa: E402


def test_bar_table_draws_one_bar_per_row_and_prints_mean_std_and_seeds(capsys, monkeypatch):
    drawn = []
    monkeypatch.setattr(plt, "show", lambda: drawn.append(plt.gcf()))
    viz.bar_table(
        {"a": np.array([0.5, 0.7]), "b": [0.2, 0.2, 0.2]},
        "IoU",
        names={"a": "row A"},
        colors={"a": "red"},
    )
    ax = drawn[0].axes[0]
    bars = [p for p in ax.patches]
    assert [round(b.get_width(), 6) for b in bars] == [0.6, 0.2]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["row A", "b"]
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "| row A | 0.600 ± 0.100 | [0.5, 0.7] |"
    assert out[3] == "| b | 0.200 ± 0.000 | [0.2, 0.2, 0.2] |"


def test_show_cams_one_row_per_image_one_panel_per_tag():
    import matplotlib

    matplotlib.use("Agg")
    from wsss_edu import viz
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=3, size=32)
    samples = [ds[i] for i in range(3)]
    cams = [np.random.default_rng(i).random((6, 32, 32)) for i in range(3)]
    fig = viz.show_cams(
        samples, cams, ds.classes, pseudo=[s["mask"] for s in samples], name="Grad-CAM"
    )
    most = max(int(s["labels"].sum()) for s in samples)
    assert len(fig.axes) == 3 * (2 + most + 1)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert sum(t.startswith("Grad-CAM ") for t in titles) == sum(
        int(s["labels"].sum()) for s in samples
    )


def test_sliders_run_nothing_until_the_button_then_the_slider_values():
    """viz.sliders, the course's slider pattern, on the installed ipywidgets (the lock's 8.x; the
    same check passed under Colab's 7.7.1 in a throwaway venv, which is why pyproject allows
    ipywidgets >= 7.6): one control per range, fn not called headless, the button calls it with the
    values the sliders hold."""
    calls = []
    f = viz.sliders(
        lambda seed, tau: calls.append((seed, tau)), seed=(0, 50), tau=(0.25, 5.0, 0.25)
    )
    w = f.widget
    kinds = {c.description: type(c).__name__ for c in w.children if getattr(c, "description", "")}
    assert kinds == {"seed": "IntSlider", "tau": "FloatSlider", "Run Interact": "Button"}
    assert calls == []
    w.children[0].value, w.children[1].value = 7, 1.5
    w.manual_button.click()
    assert calls == [(7, 1.5)]
