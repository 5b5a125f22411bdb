"""Run every notebook in order with papermill, at its default parameters (or the ones given), and
gather the results: executed notebooks under ``<output>/``, one JSON of headline numbers per
notebook under ``<output>/metrics/``, and ``<output>/results.md`` (numbers + execution times).

    python -m wsss_edu.runner [--output runs] [--only 00 03] [-p PROFILE=full -p DATASET=voc ...]
                              [--notebooks DIR]

The notebooks are those of the checkout the package is in, else of the course copy the current
folder is in (``python -m wsss_edu.course copy DIR``), else ``./notebooks``; ``--notebooks DIR``
names another folder. Finding none is an error (exit status 2), never "0 notebook(s) executed".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import ParameterError
from .io import user_path, write_text_atomic
from .params import check_parameter_values, repo_root
from .progress import check_settings, headless_kernels
from .results import duplicate_metric_names, load_all_metrics, results_table
from .threads import quiet_openmp


def notebook_paths(folder=None, only=None) -> list[Path]:
    """The course notebooks ``NN_*.ipynb`` and ``NNx_*.ipynb`` in order (02b follows 02); ``only``
    keeps those whose name starts with one of the given prefixes (e.g. ['00', '02'] runs 00, 02
    and 02b). ``folder``: default the course's ``notebooks/`` (:func:`wsss_edu.params.repo_root`:
    the checkout, a copied course the current folder is in, else the current folder).

    Raises :class:`ParameterError` naming the folder looked in and how to give another when it holds
    no notebook: a command run outside a checkout (an installed package has no notebooks) must not
    report success for running nothing."""
    folder = user_path(folder) if folder else repo_root() / "notebooks"
    paths = sorted(p for p in folder.glob("[0-9][0-9]*_*.ipynb"))
    if not paths:
        state = "does not exist" if not folder.is_dir() else "holds no notebook NN_*.ipynb"
        raise ParameterError(
            f"no course notebooks found: {folder} {state}. Run the command in a "
            f"checkout of the course (or a copy of it), or name the folder of the "
            f"notebooks: --notebooks DIR (notebooks_dir=... from Python)."
        )
    if only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
        if not paths:
            raise ParameterError(
                f"no notebook matches {only}; available: "
                f"{[p.name for p in sorted(folder.glob('[0-9][0-9]*_*.ipynb'))]}"
            )
    return paths


NOTEBOOKS_EXTRA = 'pip install "wsss_edu[notebooks]"'
"""The command that installs what runs the notebooks (papermill, JupyterLab, the kernel); double
quotes, which every shell reads (cmd.exe on Windows does not take single ones)."""


def import_papermill():
    """The papermill module, which executes the notebooks. It comes with the ``notebooks`` extra,
    not with the package: when it is missing, a :class:`ModuleNotFoundError` whose message names
    :data:`NOTEBOOKS_EXTRA` (a missing dependency of papermill itself is raised as it is)."""
    try:
        import papermill
    except ModuleNotFoundError as e:
        if e.name != "papermill":
            raise
        raise ModuleNotFoundError(
            f"papermill, which runs the notebooks, is not installed: {NOTEBOOKS_EXTRA}",
            name="papermill",
        ) from None
    return papermill


def parse_params(pairs) -> dict:
    """['KEY=VALUE', ...] → dict, with VALUE read as JSON when it parses (numbers, booleans)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ParameterError(f"parameter {pair!r} must be KEY=VALUE, e.g. PROFILE=full")
        k, v = pair.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


# The notebook parameters that are paths: resolved against the caller's folder before a notebook
# (whose kernel runs in notebooks/) sees them (:func:`wsss_edu.io.user_path`).
PATH_PARAMS = ("OUTPUT_DIR", "DATA_ROOT", "BOXES_DATA_ROOT")


def resolve_paths(output, params: dict) -> tuple:
    """(the output folder, ``params`` with every path parameter made absolute): an ``OUTPUT_DIR``
    parameter is the output folder (the notebooks' numbers and results.md in one place), else
    ``output``."""
    params = {
        k: (str(user_path(v)) if k in PATH_PARAMS and v not in ("", None) else v)
        for k, v in (params or {}).items()
    }
    output = user_path(params.get("OUTPUT_DIR") or output)
    return output, params | {"OUTPUT_DIR": str(output)}


def run_notebooks(
    output="runs", only=None, params=None, timeout: int = 1800, notebooks_dir=None, log=print
) -> dict:
    """Execute the notebooks; returns {notebook name: seconds}. Stops at the first failure (its
    partly executed notebook is kept) after writing results.md for what ran. Relative paths
    (``output``, an ``OUTPUT_DIR`` / ``DATA_ROOT`` parameter) are taken from the current folder.
    The kernels write their progress as plain lines (``WSSS_PROGRESS=log`` unless set otherwise:
    :func:`wsss_edu.progress.headless_kernels`), not widgets nobody draws; their OpenMP threads
    wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless set: :func:`wsss_edu.threads.quiet_openmp`),
    so that a kernel sharing its cores with other work does not spin on them."""
    paths = notebook_paths(notebooks_dir, only)  # none found: an error before anything is written
    pm = import_papermill()  # missing: an error naming the extra, ditto

    output, params = resolve_paths(output, params)
    output.mkdir(parents=True, exist_ok=True)
    times = {}
    for nb in paths:  # check every notebook's parameters before running any
        check_parameters(nb, params)
    check_settings()  # and the progress settings the kernels will read
    for nb in paths:
        log(f"running {nb.name} ...")
        t0 = time.time()
        try:
            with headless_kernels(), quiet_openmp():
                pm.execute_notebook(
                    str(nb),
                    str(output / nb.name),
                    parameters=params,
                    kernel_name="python3",
                    execution_timeout=timeout,
                    cwd=str(nb.parent),
                    progress_bar=False,
                )
        finally:
            times[nb.stem] = time.time() - t0
            write_results(output, times)
        log(f"  done in {times[nb.stem]:.1f} s")
    return times


def check_parameters(notebook, params: dict) -> None:
    """Raise :class:`ParameterError` listing the valid names when ``params`` names a parameter
    the notebook's ``parameters`` cell does not define (papermill would only log it), or naming
    the values that break their rule (:func:`wsss_edu.params.check_parameter_values`)."""
    valid = set(import_papermill().inspect_notebook(str(notebook)))
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ParameterError(
            f"{Path(notebook).name} has no parameter(s) {unknown}; its parameters: {sorted(valid)}"
        )
    check_parameter_values(params, Path(notebook).stem)


def write_results(output, times: dict) -> Path:
    """Write ``<output>/results.md`` from the metrics JSONs and the times (appended to times.json
    so runs of single notebooks accumulate)."""
    output = Path(output)
    tfile = output / "times.json"
    all_times = json.loads(tfile.read_text()) if tfile.exists() else {}
    all_times.update({k: round(v, 1) for k, v in times.items()})
    write_text_atomic(tfile, json.dumps(all_times, indent=2, sort_keys=True) + "\n")
    metrics = load_all_metrics(output)
    text = (
        "# Results\n\nHeadline numbers of each notebook (metrics/*.json) and its execution "
        "time.\n\n" + results_table(metrics, all_times)
    )
    dups = duplicate_metric_names(metrics)
    if dups:
        text += f"\n**Warning:** metric names recorded by several notebooks: {dups}\n"
    path = output / "results.md"
    write_text_atomic(path, text)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--output", default="runs", help="folder for executed notebooks and results")
    ap.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 00 03")
    ap.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        help="notebook parameter KEY=VALUE (repeatable), e.g. -p PROFILE=full",
    )
    ap.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds")
    ap.add_argument(
        "--notebooks",
        default=None,
        metavar="DIR",
        help="the folder of the course notebooks (default: the checkout's notebooks/)",
    )
    args = ap.parse_args(argv)
    try:
        params = parse_params(args.param)
        times = run_notebooks(args.output, args.only, params, args.timeout, args.notebooks)
    except ParameterError as e:  # bad input: the message names the fix; no traceback
        ap.error(str(e))
    except ModuleNotFoundError as e:
        if e.name != "papermill":
            raise
        ap.error(str(e))  # names the install command (import_papermill)
    out = resolve_paths(args.output, params)[0]
    print(f"\n{len(times)} notebook(s) executed in {sum(times.values()):.0f} s.")
    print(f"  executed notebooks: {out}/")
    print(f"  headline numbers:   {out}/metrics/*.json")
    print(f"  summary table:      {out}/results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
