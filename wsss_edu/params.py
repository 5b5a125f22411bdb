"""The parameters every notebook shares, validated in one place.

Each notebook's first code cell (tagged ``parameters``) sets DATASET, DATA_ROOT, OUTPUT_DIR,
PROFILE, DEVICE, SEED and its size knobs; the next cell calls :func:`setup`, which checks them and
resolves the derived values (papermill does not recompute the parameters cell).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .datasets import DATASETS, get_dataset
from .errors import ParameterError, check_choice
from .io import user_path
from .results import record_metrics, save_model
from .train import get_device, seed_everything


PROFILES = ("quick", "full")


def repo_root() -> Path:
    """The repository holding this package (an editable install), else the current folder."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "notebooks").is_dir() else Path.cwd()


def default_output_dir() -> Path:
    """``$WSSS_OUTPUT_DIR`` if set, else ``<repo>/runs``."""
    return user_path(os.environ.get("WSSS_OUTPUT_DIR")) or repo_root() / "runs"


@dataclass
class Setup:
    """The resolved parameters of one notebook run."""
    notebook: str
    dataset: str
    data_root: Path | None
    output_dir: Path
    profile: str
    device: torch.device
    seed: int

    @property
    def quick(self) -> bool:
        return self.profile == "quick"

    def record(self, metrics: dict) -> Path:
        """Write this notebook's headline numbers to ``<output_dir>/metrics/<notebook>.json``."""
        return record_metrics(self.output_dir, self.notebook, metrics)

    def save_model(self, name: str, model) -> Path:
        """Keep this notebook's final network ``name`` for later notebooks (notebook 08's
        gallery): ``<output_dir>/models/<notebook>/<name>.pt``; read back with
        :func:`wsss_edu.results.load_model`."""
        return save_model(self.output_dir, self.notebook, name, model)

    def path(self, *parts) -> Path:
        """A path under this notebook's own output folder (created)."""
        p = self.output_dir / self.notebook
        p.mkdir(parents=True, exist_ok=True)
        return p.joinpath(*parts)


def setup(notebook: str, DATASET: str = "toy", DATA_ROOT: str = "", OUTPUT_DIR: str = "",
          PROFILE: str = "quick", DEVICE: str = "auto", SEED: int = 0, threads: int | None = None,
          verbose: bool = True) -> Setup:
    """Validate the shared parameters, seed everything, pick the device and make OUTPUT_DIR.

    An unknown DATASET / PROFILE / DEVICE raises an error listing the valid values; a real dataset
    without DATA_ROOT raises one naming the data_scripts command.
    """
    check_choice("DATASET", DATASET, DATASETS)
    check_choice("PROFILE", PROFILE, PROFILES)
    if DATASET != "toy" and not DATA_ROOT:
        raise ParameterError(
            f"DATASET={DATASET!r} needs DATA_ROOT, the folder holding the data; fetch it with "
            f"`python data_scripts/download.py {DATASET} --root DATA_ROOT` (see data_scripts/README.md)")
    try:
        seed = int(SEED)
    except (TypeError, ValueError):
        raise ParameterError(f"SEED={SEED!r} must be an integer") from None
    device = get_device(DEVICE)
    out = user_path(OUTPUT_DIR) or default_output_dir()
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(int(threads))
    seed_everything(seed)
    s = Setup(notebook, DATASET, user_path(DATA_ROOT), out.resolve(), PROFILE, device, seed)
    if verbose:
        print(f"{notebook}: dataset={DATASET} profile={PROFILE} device={device} seed={seed} "
              f"output={s.output_dir}")
    return s


# The (train, val) splits each dataset uses by default: weak labels on train, evaluation on val.
DEFAULT_SPLITS = {"toy": ("train", "val"), "voc": ("train_aug", "val"),
                  "cityscapes": ("train", "val"), "camvid": ("train", "val"),
                  "coco": ("train2014", "val2014"), "msrc": ("train", "val")}


def load_splits(s: Setup, n_train=None, n_val=None, **toy_knobs):
    """(train, val) datasets of ``s.dataset`` at its default splits. For the toy world, ``n_train``
    / ``n_val`` images with ``s.seed`` and the given knobs; for real datasets, from
    ``s.data_root`` (knobs are ignored there)."""
    tr, va = DEFAULT_SPLITS[s.dataset]
    if s.dataset == "toy":
        return (get_dataset("toy", split=tr, n=n_train, seed=s.seed, **toy_knobs),
                get_dataset("toy", split=va, n=n_val, seed=s.seed, **toy_knobs))
    return (get_dataset(s.dataset, s.data_root, split=tr),
            get_dataset(s.dataset, s.data_root, split=va))


# The split each dataset's final numbers are reported on when settings were chosen on val: one with
# public masks that no choice has seen. VOC, Cityscapes and COCO have none (their test masks are not
# public): there the report falls back to val, and the notebooks say so.
TEST_SPLITS = {"toy": "test", "camvid": "test", "msrc": "test"}


def load_test(s: Setup, n_test=None, **toy_knobs):
    """(held-out dataset, its split name): the split of :data:`TEST_SPLITS` (the toy world:
    ``n_test`` images with ``s.seed`` and the knobs), or (None, None) for a dataset without one."""
    split = TEST_SPLITS.get(s.dataset)
    if split is None:
        return None, None
    if s.dataset == "toy":
        return get_dataset("toy", split=split, n=n_test, seed=s.seed, **toy_knobs), split
    return get_dataset(s.dataset, s.data_root, split=split), split


def for_dataset(defaults: dict, overrides: dict, dataset: str) -> dict:
    """A profile table ({name: (quick, full)}) with ``dataset``'s own values where it has some:
    ``defaults`` updated by ``overrides.get(dataset, {})`` (a real dataset's image sizes and
    backbones differ from the toy world's)."""
    return {**defaults, **overrides.get(dataset, {})}


def profile_values(profile: str, defaults: dict, **given) -> dict:
    """Resolve size knobs: each ``given`` value that is not None wins; None takes the profile's
    default from ``defaults`` = {name: (quick value, full value)}. Unknown names raise an error."""
    check_choice("PROFILE", profile, PROFILES)
    unknown = set(given) - set(defaults)
    if unknown:
        raise ParameterError(f"no profile default for {sorted(unknown)}; known: {sorted(defaults)}")
    col = PROFILES.index(profile)
    return {k: (given.get(k) if given.get(k) is not None else v[col]) for k, v in defaults.items()}
