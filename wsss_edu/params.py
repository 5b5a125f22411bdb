"""The parameters every notebook shares, validated in one place.

Each notebook's first code cell (tagged ``parameters``) sets DATASET, DATA_ROOT, OUTPUT_DIR,
PROFILE, DEVICE, SEED and its size knobs; the next cell calls :func:`setup`, which checks them and
resolves the derived values (papermill does not recompute the parameters cell).
"""

from __future__ import annotations

import ast
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from difflib import get_close_matches
from numbers import Integral, Real
from pathlib import Path

import torch

from . import course
from .datasets import DATASETS, get_dataset
from .distributed import train_processes
from .errors import ParameterError, check_choice
from .io import user_path
from .parallel import shard_spec
from .results import record_metrics, save_model
from .train import get_device, seed_everything

PROFILES = ("quick", "full")


# ------------------------------------------------------------------------------------------------
# What each notebook parameter may be
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """What one notebook parameter may hold: ``kind`` 'int' (a whole number), 'real' (a finite
    number), 'bool', 'text', or 'ints' / 'reals' (a list or tuple of them, ``length`` items if
    given); numbers (each item of a list) within ``low``..``high`` (inclusive; ``low_open``:
    strictly above ``low``); ``optional``: None is accepted (the profile's or the notebook's
    default); ``text_too``: a string is accepted as well (a named preset, e.g. FACTORS='voc').
    A string's own valid values are checked where it is used (:func:`wsss_edu.errors.check_choice`)."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    optional: bool = True
    text_too: bool = False
    length: int | None = None
    items_optional: bool = False

    def describe(self) -> str:
        """The rule in words, for error messages."""
        what = {
            "int": "a whole number",
            "real": "a number",
            "bool": "True or False",
            "text": "a string",
            "ints": "a list of whole numbers",
            "reals": "a list of numbers",
        }[self.kind]
        if self.length is not None:
            what = what.replace("a list", f"a list of {self.length}")
        if self.low is not None or self.high is not None:
            lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
            hi = "" if self.high is None else f"<= {self.high:g}"
            what += " " + " and ".join(t for t in (lo, hi) if t)
        if self.text_too:
            what += ", or a name"
        return what + (", or None" if self.optional else "")

    def problem(self, value) -> str | None:
        """Why ``value`` breaks the rule, or None when it keeps it."""
        if value is None:
            return None if self.optional else "None is not allowed"
        if self.text_too and isinstance(value, str):
            return None
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"{value!r} is not True or False"
        if self.kind == "text":
            return None if isinstance(value, str) else f"{value!r} is not a string"
        if self.kind in ("ints", "reals"):
            if not isinstance(value, (list, tuple)) or not value:
                return f"{value!r} is not a non-empty list"
            if self.length is not None and len(value) != self.length:
                return f"{value!r} has {len(value)} items, not {self.length}"
            item = Rule(
                self.kind[:-1], self.low, self.high, self.low_open, optional=self.items_optional
            )
            for v in value:
                bad = item.problem(v)
                if bad is not None:
                    return f"item {bad}"
            return None
        if isinstance(value, bool) or not isinstance(
            value, Integral if self.kind == "int" else Real
        ):
            return f"{value!r} is not {'a whole number' if self.kind == 'int' else 'a number'}"
        if not math.isfinite(value):
            return f"{value!r} is not finite"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"{value!r} is {'not above' if self.low_open else 'below'} {self.low:g}"
        if self.high is not None and value > self.high:
            return f"{value!r} is above {self.high:g}"
        return None


_COUNT = Rule("int", low=1)  # how many images, epochs, seeds, pixels, ...
_COUNT0 = Rule("int", low=0)  # a count that may be 0 (workers, frozen blocks)
_POSITIVE = Rule(
    "real", low=0, low_open=True
)  # learning rates, kernel widths, thresholds on sigma^2
_NONNEG = Rule("real", low=0)
_SHARE = Rule("real", low=0, high=1)  # a rate, probability or threshold in [0, 1]
_SCALES = Rule("reals", low=0, low_open=True)  # image scales, betas, factors
_FLAG = Rule("bool", optional=False)
_TEXT = Rule("text")

# Every parameter of every notebook's ``parameters`` cell, defined once: None means "the profile's
# default" wherever the notebook says so (``optional``). tests/test_params_runner.py checks that
# each notebook's parameters are all here and that every notebook default and profile value keeps
# its rule.
PARAMETER_RULES = {
    # shared by every notebook (params.setup)
    "DATASET": Rule("text", optional=False),
    "DATA_ROOT": _TEXT,
    "OUTPUT_DIR": _TEXT,
    "PROFILE": Rule("text", optional=False),
    "DEVICE": Rule("text", optional=False),
    "SEED": Rule("int", optional=False),
    # sizes and counts
    **{
        k: _COUNT
        for k in (
            "IMAGE_SIZE",
            "N_TRAIN",
            "N_VAL",
            "EPOCHS",
            "BATCH_SIZE",
            "WIDTH",
            "IR_EPOCHS",
            "IR_RADIUS",
            "IR_BATCH",
            "SEG_EPOCHS",
            "STUDENT_EPOCHS",
            "RRM_EPOCHS",
            "RRM_BATCH",
            "RRM_DILATION",
            "RRM_SEG_CHANNELS",
            "N_CURVE",
            "GRAD_CAM_IMAGES",
            "SEEDS",
            "PP_PER_BATCH",
            "CROP",
            "IR_CROP",
            "SEG_CROP",
            "RRM_CROP",
        )
    },
    "MC_SAMPLES": Rule("int", low=1, optional=False),
    **{k: _COUNT0 for k in ("N_PP", "WARMUP", "FROZEN_BLOCKS", "SEG_FROZEN_BLOCKS")},
    **{k: Rule("int", low=0, optional=False) for k in ("WORKERS", "N_SHOW", "SHOW")},
    "PP_SWEEP": Rule("ints", low=0),
    "WALK_RADII": Rule("ints", low=1),
    "WALK_EXP_TIMES": Rule("ints", low=1),
    # numbers
    **{
        k: _POSITIVE
        for k in (
            "LR_NEW",
            "SEG_LR",
            "RRM_LR",
            "SIGMA_XY",
            "SIGMA_RGB",
            "CRF_SCALE",
            "GAMMA",
            "ENERGY_SCALE",
        )
    },
    **{k: Rule("real", low=0, low_open=True, optional=False) for k in ("IR_LR", "TAU")},
    "ENERGY_WEIGHT": _NONNEG,
    "T": Rule("real", low=0, optional=False),
    "IMBALANCE": Rule("real", low=1, optional=False),
    **{k: Rule("real", low=0, high=1, optional=False) for k in ("MISSING_RATE", "CONFIDENCE")},
    "STEP3_BG": _SHARE,
    "FRACTION": Rule("real", low=0, high=1, low_open=True),
    **{k: Rule("real", low=0, high=1) for k in ("IR_MOMENTUM", "RRM_MOMENTUM")},
    # lists of numbers
    **{
        k: _SCALES for k in ("CAM_SCALES", "P_SCALES", "TTA_SCALES", "IR_COPY_SCALES", "WALK_BETAS")
    },
    "SEG_SCALE": Rule("reals", low=0, low_open=True, length=2, optional=False),
    "TWO_CRF": Rule("reals", low=0, low_open=True, length=2),
    "RATIOS": Rule("reals", low=0, high=1, low_open=True),
    "T_GRID": Rule("reals", low=0),
    "WALK_BG": Rule("reals", low=0, high=1, items_optional=True),
    "FACTORS": Rule("reals", low=0, low_open=True, optional=False, text_too=True),
    # switches
    **{
        k: Rule("bool")
        for k in ("BALANCE", "FREEZE_BN", "PROBABILITY_ROW", "TABLE2_CAM", "TWO_STEP")
    },
    **{k: _FLAG for k in ("INCLUDE_BACKGROUND", "RUN_MISSING", "TABLE3", "WARMUP_ON_BOXES")},
    # names, checked against their valid values where they are used
    **{
        k: _TEXT
        for k in (
            "AUGMENT",
            "BACKBONE",
            "IR_BACKBONE",
            "IR_AUGMENT",
            "SEG_BACKBONE",
            "SEG_OPTIMIZER",
            "RRM_OPTIMIZER",
            "RULE",
            "DROP_CLASS",
            "WEIGHTS",
        )
    },
    **{
        k: Rule("text", optional=False)
        for k in ("IR_PATH", "IR_SOURCES", "PRESENT_FROM", "PSEUDO_LABELS")
    },
}


def check_parameter_values(values: dict, where: str = "") -> None:
    """Raise one :class:`ParameterError` listing every value of ``values`` ({name: value}) that
    breaks its :data:`PARAMETER_RULES` rule, each with what the parameter may be (``where``: the
    notebook, for the message). Names without a rule are left to the caller."""
    bad = [
        f"{k}={v!r}: {why}; {k} must be {PARAMETER_RULES[k].describe()}"
        for k, v in values.items()
        if k in PARAMETER_RULES and (why := PARAMETER_RULES[k].problem(v)) is not None
    ]
    if bad:
        raise ParameterError(
            f"{where + ': ' if where else ''}parameter value(s) not valid:\n  " + "\n  ".join(bad)
        )


def notebook_file(notebook: str) -> Path | None:
    """The course notebook ``notebook`` (its name without ``.ipynb``): in the repository's
    notebooks/, else in the current folder (a copied course); None when neither has it."""
    for folder in (repo_root() / "notebooks", Path.cwd()):
        if (folder / f"{notebook}.ipynb").is_file():
            return folder / f"{notebook}.ipynb"
    return None


def _code_cells(path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    return [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in nb["cells"]
        if c["cell_type"] == "code"
    ]


def _assigned_names(source: str) -> set:
    """The names a cell's code binds at module level (assignments, loops, imports, defs); a
    cell that is not valid Python (an IPython magic) binds none that counts."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def parameter_names(path) -> list[str]:
    """The names a notebook's ``parameters`` cell (its first code cell) defines, in order."""
    first = _code_cells(path)[0]
    return [
        n.targets[0].id
        for n in ast.parse(first).body
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
    ]


def unknown_parameters(path, namespace: dict) -> list[str]:
    """The UPPER_CASE names in ``namespace`` (a notebook's globals) that no cell of the notebook
    at ``path`` binds: a parameter given by name (papermill's ``-p``) that the notebook does not
    have, which papermill only logs. Names the notebook binds later (re-running a cell in Jupyter)
    are not unknown."""
    known = set().union(*(_assigned_names(c) for c in _code_cells(path)))
    return sorted(k for k in namespace if k.isupper() and not k.startswith("_") and k not in known)


def check_namespace(notebook: str, namespace: dict) -> None:
    """The checks :func:`setup` makes on a notebook's globals: no parameter the notebook does not
    have (when its file is found: :func:`notebook_file`), and every parameter's value within its
    rule (:data:`PARAMETER_RULES`)."""
    path = notebook_file(notebook)
    if path is not None:
        unknown = unknown_parameters(path, namespace)
        if unknown:
            valid = parameter_names(path)
            hints = {k: get_close_matches(k, valid, n=1) for k in unknown}
            said = ", ".join(
                f"{k}" + (f" (did you mean {m[0]}?)" if m else "") for k, m in hints.items()
            )
            raise ParameterError(f"{notebook} has no parameter(s) {said}; its parameters: {valid}")
        names = parameter_names(path)
    else:
        names = [k for k in namespace if k in PARAMETER_RULES]
    check_parameter_values({k: namespace[k] for k in names if k in namespace}, notebook)


def check_writable(folder: Path, name: str = "OUTPUT_DIR") -> None:
    """Raise :class:`ParameterError` naming ``folder`` unless a file can be created and removed
    there (checked before any compute, not in a notebook's last cell)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".wsss-write-check-"):
            pass
    except OSError as e:
        raise ParameterError(
            f"{name}={str(folder)!r} is not writable ({e.strerror or e}); give a "
            f"folder you can write to (-p {name} <folder>, or set WSSS_OUTPUT_DIR)"
        ) from None


def repo_root() -> Path:
    """The course's root folder: the repository holding this package (an editable install,
    ``PYTHONPATH``), else the copy of the course (``python -m wsss_edu.course copy DIR``) the
    current folder is in — a notebook's kernel runs in ``DIR/notebooks`` or ``DIR/students`` —,
    else the current folder (:mod:`wsss_edu.course`)."""
    return course.checkout_root() or course.find_course_root(Path.cwd()) or Path.cwd()


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


class SlowProfileWarning(UserWarning):
    """PROFILE='full' on a CPU: the run works, but takes far longer than the course means it to."""


def slow_profile_message(profile: str, device: torch.device) -> str | None:
    """The warning :func:`setup` gives for ``profile`` on ``device``, or None when there is none:
    PROFILE='full' (the papers' networks, image sizes and epochs, sized for a GPU) on a CPU."""
    if profile != "full" or torch.device(device).type != "cpu":
        return None
    return (
        "PROFILE='full' on the CPU: the full profile trains the papers' networks at their image "
        "sizes and epochs (ResNet-50 backbones, thousands of images), sized for a GPU; on a CPU "
        'it is very slow (hours where the quick profile takes minutes). Set PROFILE = "quick" (the toy-sized course, minutes on a laptop), or run '
        "on a machine with a GPU (DEVICE='auto' picks it up; on Colab: Runtime > Change runtime "
        "type > GPU)."
    )


def setup(
    notebook: str,
    DATASET: str = "toy",
    DATA_ROOT: str = "",
    OUTPUT_DIR: str = "",
    PROFILE: str = "quick",
    DEVICE: str = "auto",
    SEED: int = 0,
    threads: int | None = None,
    verbose: bool = True,
    namespace: dict | None = None,
) -> Setup:
    """Validate the shared parameters, seed everything, pick the device and make OUTPUT_DIR.

    An unknown DATASET / PROFILE / DEVICE raises an error listing the valid values; a real dataset
    without DATA_ROOT raises one naming the command that fetches it. With ``namespace`` (the
    notebook's ``globals()``), every parameter is checked against its rule and a parameter the
    notebook does not have (a misspelt ``-p`` name) is refused (:func:`check_namespace`).
    OUTPUT_DIR must be writable, and the environment's ``WSSS_SHARD`` / ``WSSS_TRAIN_PROCESSES``
    valid, before anything is computed. PROFILE='full' on a CPU runs, with a
    :class:`SlowProfileWarning` naming the fix (:func:`slow_profile_message`).
    """
    if namespace is not None:
        check_namespace(notebook, namespace)
    check_parameter_values(
        dict(
            DATASET=DATASET,
            DATA_ROOT=DATA_ROOT,
            OUTPUT_DIR=OUTPUT_DIR,
            PROFILE=PROFILE,
            DEVICE=DEVICE,
            SEED=SEED,
        ),
        notebook,
    )
    check_choice("DATASET", DATASET, DATASETS)
    check_choice("PROFILE", PROFILE, PROFILES)
    if DATASET != "toy" and not DATA_ROOT:
        raise ParameterError(
            f"DATASET={DATASET!r} needs DATA_ROOT, the folder holding the data; fetch it with "
            f"`python -m wsss_edu.download {DATASET} --root DATA_ROOT` (`python -m wsss_edu.download "
            "--help` lists every dataset)"
        )
    seed = int(SEED)
    device = get_device(DEVICE)
    slow = slow_profile_message(PROFILE, device)
    if slow is not None:
        warnings.warn(slow, SlowProfileWarning, stacklevel=2)
    out = user_path(OUTPUT_DIR) or default_output_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ParameterError(
            f"OUTPUT_DIR={str(out)!r} cannot be made ({e.strerror or e}); give a "
            "folder you can write to (-p OUTPUT_DIR <folder>, or set WSSS_OUTPUT_DIR)"
        ) from None
    check_writable(out)
    shard_spec()
    train_processes()
    if threads:
        torch.set_num_threads(int(threads))
    seed_everything(seed)
    s = Setup(notebook, DATASET, user_path(DATA_ROOT), out.resolve(), PROFILE, device, seed)
    if verbose:
        print(
            f"{notebook}: dataset={DATASET} profile={PROFILE} device={device} seed={seed} "
            f"output={s.output_dir}"
        )
    return s


# The (train, val) splits each dataset uses by default: weak labels on train, evaluation on val.
DEFAULT_SPLITS = {
    "toy": ("train", "val"),
    "voc": ("train_aug", "val"),
    "cityscapes": ("train", "val"),
    "camvid": ("train", "val"),
    "coco": ("train2014", "val2014"),
    "msrc": ("train", "val"),
}


def load_splits(s: Setup, n_train=None, n_val=None, **toy_knobs):
    """(train, val) datasets of ``s.dataset`` at its default splits. For the toy world, ``n_train``
    / ``n_val`` images with ``s.seed`` and the given knobs; for real datasets, from
    ``s.data_root`` (knobs are ignored there)."""
    tr, va = DEFAULT_SPLITS[s.dataset]
    if s.dataset == "toy":
        return (
            get_dataset("toy", split=tr, n=n_train, seed=s.seed, **toy_knobs),
            get_dataset("toy", split=va, n=n_val, seed=s.seed, **toy_knobs),
        )
    return (
        get_dataset(s.dataset, s.data_root, split=tr),
        get_dataset(s.dataset, s.data_root, split=va),
    )


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
    default from ``defaults`` = {name: (quick value, full value)}. Unknown names, and values that
    break their :data:`PARAMETER_RULES` rule (``EPOCHS=0``), raise an error naming them."""
    check_choice("PROFILE", profile, PROFILES)
    unknown = set(given) - set(defaults)
    if unknown:
        raise ParameterError(f"no profile default for {sorted(unknown)}; known: {sorted(defaults)}")
    check_parameter_values({k: v for k, v in given.items() if v is not None})
    col = PROFILES.index(profile)
    return {k: (given.get(k) if given.get(k) is not None else v[col]) for k, v in defaults.items()}
