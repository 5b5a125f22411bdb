"""The results recorder and the artifact cache."""

import json

import numpy as np
import pytest
import torch

from wsss_edu.cache import artifact_path, cached, params_key
from wsss_edu.errors import ParameterError
from wsss_edu.results import duplicate_metric_names, load_all_metrics, record_metrics, results_table


def test_record_merges_flat_numbers(tmp_path):
    p = record_metrics(tmp_path, "01_x", {"a": np.float32(0.5), "n": 3})
    record_metrics(tmp_path, "01_x", {"b": torch.tensor(0.25), "skip": None})
    assert json.loads(p.read_text()) == {"a": 0.5, "b": 0.25, "n": 3, "skip": None}
    assert p == tmp_path / "metrics" / "01_x.json"
    with pytest.raises(ParameterError, match="finite"):
        record_metrics(tmp_path, "01_x", {"bad": float("nan")})
    with pytest.raises(ParameterError, match="finite"):
        record_metrics(tmp_path, "01_x", {"bad": "high"})


def test_table_and_duplicates(tmp_path):
    record_metrics(tmp_path, "00_a", {"miou_a": 0.5})
    record_metrics(tmp_path, "01_b", {"miou_a": 0.6, "miou_b": 0.7})
    allm = load_all_metrics(tmp_path)
    assert duplicate_metric_names(allm) == {"miou_a": ["00_a", "01_b"]}
    table = results_table(allm, {"00_a": 12.34})
    assert "| 00_a | 12.3 | `miou_a` = 0.5 |" in table and "`miou_b` = 0.7" in table


def test_cache_computes_once_and_is_keyed_by_params(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"cams": np.ones((2, 3), np.float32), "n": torch.tensor(2)}

    a = cached(tmp_path, "cams", {"scale": 1, "seed": 0}, compute)
    b = cached(tmp_path, "cams", {"seed": 0, "scale": 1}, compute)  # same params, other order
    assert len(calls) == 1 and torch.equal(a["cams"], b["cams"])
    cached(tmp_path, "cams", {"scale": 2, "seed": 0}, compute)
    assert len(calls) == 2
    path = artifact_path(tmp_path, "cams", {"scale": 1, "seed": 0})
    assert path.exists() and path.with_suffix(".json").exists()
    torch.load(path, weights_only=True)  # plain tensors only
    path.write_bytes(b"corrupt")
    with pytest.warns(UserWarning, match=r"cannot be trusted.*computing it again"):
        cached(tmp_path, "cams", {"scale": 1, "seed": 0}, compute)
    assert len(calls) == 3
    assert params_key({"a": 1}) != params_key({"a": 2})


def test_cache_stores_numpy_scalars_and_names_bad_types(tmp_path):
    out = cached(tmp_path, "x", {}, lambda: {"miou": np.float64(0.5), "n": np.int64(3)})
    assert out == {"miou": 0.5, "n": 3}
    with pytest.raises(TypeError, match=r"artifact\['bad'\] is a set"):
        cached(tmp_path, "y", {}, lambda: {"bad": {1, 2}})
