"""The whole course at full scale, in one command: every notebook through papermill, in order,
with PROFILE, DATASET and DATA_ROOT given once, into one OUTPUT_DIR whose artifact cache chains
the steps (CAMs → IRNet → DeepLabv3+; URN on those pseudo-masks; RRM from step 1's classifier;
notebook 08 side by side), then a report that puts the numbers next to the papers' tables.

    python -m wsss_edu.pipeline --dataset voc --data-root /data/voc --output runs/full
    python -m wsss_edu.pipeline ... --only 03 04 05       # some steps (02 also runs 02b)
    python -m wsss_edu.pipeline ... -p SEG_EPOCHS=30 -p 07:RRM_EPOCHS=4   # all / one notebook

Resumable: a step that finished has ``steps/<notebook>/done.json``, which records its parameters,
a digest of the notebook's code cells, the ``CODE_VERSION`` of each step module the notebook uses
(``wsss_edu/steps/*.py`` named in its code, and those they import) and, for provenance, the package
version. A step whose record matches is skipped; one whose parameters, notebook code or step
versions changed (after ``git pull``, an update) runs again, and its log line says why; so does a
step whose done.json predates these records. The package version alone reruns nothing: the step
versions say what an update changed (see :mod:`wsss_edu.cache`). An interrupted step runs again,
and inside it the cached artifacts and the per-epoch training checkpoints are picked up where they
stopped. Each step keeps its executed notebook and
its log (``steps/<notebook>/``). ``--train-processes N`` (default: one per visible GPU) runs the
training steps under torchrun; ``--shard i/n`` lets n machines sharing OUTPUT_DIR split the
CRF-heavy per-image passes. Paper 000's notebooks (02, 02b) need a street-scene dataset: they take
``--boxes-dataset`` / ``--boxes-data-root`` (default: DATASET when it is cityscapes or camvid,
else the toy world at the full profile's size).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import wsss_edu

from . import compare
from .errors import ParameterError
from .io import user_path, write_text_atomic
from .parallel import shard_spec
from .params import check_parameter_values
from .progress import check_settings, headless_kernels
from .results import load_all_metrics, results_table
from .runner import import_papermill, notebook_paths, parse_params
from .threads import quiet_openmp

BOXES_NOTEBOOKS = ("02_", "02b_")  # paper 000: boxes + a few masks, street scenes
BOXES_DATASETS = ("toy", "cityscapes", "camvid")
STEPS_DIR = (
    Path(__file__).resolve().parent / "steps"
)  # the step modules whose CODE_VERSION done.json records


def notebook_parameters(path) -> set:
    """The names a notebook's ``parameters`` cell defines."""
    return set(import_papermill().inspect_notebook(str(path)))


def split_overrides(pairs) -> dict:
    """['KEY=V', 'NN:KEY=V', ...] → {'*': {KEY: V}, 'NN': {KEY: V}} (values read as JSON when
    they parse, as :func:`wsss_edu.runner.parse_params`)."""
    out = {}
    for pair in pairs or []:
        target, kv = ("*", pair)
        head = pair.split("=", 1)[0]
        if ":" in head:
            target, kv = pair.split(":", 1)
        out.setdefault(target, {}).update(parse_params([kv]))
    return out


def step_parameters(path, shared: dict, overrides: dict, valid: set | None = None) -> dict:
    """What notebook ``path`` is given: the shared parameters it defines (paper 000's notebooks
    take the boxes dataset), the global overrides it defines, then its own ('NN:KEY=V'; a name it
    does not define is an error naming its parameters)."""
    name = Path(path).name
    valid = notebook_parameters(path) if valid is None else valid
    p = {k: v for k, v in shared.items() if k in valid}
    if name.startswith(BOXES_NOTEBOOKS):
        p.update(
            {
                k: shared[f"BOXES_{k}"]
                for k in ("DATASET", "DATA_ROOT")
                if f"BOXES_{k}" in shared and k in valid
            }
        )
    p.update({k: v for k, v in overrides.get("*", {}).items() if k in valid})
    for target, given in overrides.items():
        if target != "*" and name.startswith(target + "_"):
            unknown = sorted(set(given) - valid)
            if unknown:
                raise ParameterError(
                    f"{name} has no parameter(s) {unknown}; its parameters: {sorted(valid)}"
                )
            p.update(given)
    return p


def check_overrides(paths, overrides: dict, valids: dict) -> None:
    """Every global override is defined by at least one notebook, every 'NN:' names a notebook."""
    names = [p.name for p in paths]
    for key in overrides.get("*", {}):
        if not any(key in valids[n] for n in names):
            raise ParameterError(
                f"no notebook has a parameter {key!r}; check the spelling "
                f"(each notebook's first code cell lists its parameters)"
            )
    for target in overrides:
        if target != "*" and not any(n.startswith(target + "_") for n in names):
            raise ParameterError(f"'{target}:' matches no notebook among {names}")


def step_code_versions(steps_dir=None) -> dict:
    """{step module: (its ``CODE_VERSION``, the step modules it imports)} of ``wsss_edu/steps/*.py``
    (``steps_dir``, default :data:`STEPS_DIR`), read from their source: the pipeline (plumbing)
    does not import the steps (``tests/test_layout.py``), and the constant is all it needs. A module
    without ``CODE_VERSION`` is left out."""
    out = {}
    for path in sorted(Path(steps_dir or STEPS_DIR).glob("*.py")):
        tree = ast.parse(path.read_text())
        versions = [
            ast.literal_eval(n.value)
            for n in tree.body
            if isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "CODE_VERSION" for t in n.targets)
        ]
        if not versions:
            continue
        froms = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1]
        imports = {n.module.split(".")[0] for n in froms if n.module} | {
            a.name for n in froms if not n.module for a in n.names
        }
        out[path.stem] = (versions[-1], imports)
    return out


def notebook_code(path) -> str:
    """The source of a notebook's code cells, in order: what decides its results (markdown, outputs
    and metadata do not, so a re-saved or stripped notebook is not taken for a changed one)."""
    cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    return "\n".join("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code")


def notebook_steps(code: str, steps: dict) -> dict:
    """{step module: CODE_VERSION} of the step modules named in a notebook's ``code`` (as a word:
    ``from wsss_edu.steps import cam_step``) and of those they import, transitively (``steps``:
    :func:`step_code_versions`)."""
    todo, used = [m for m in steps if re.search(rf"\b{m}\b", code)], set()
    while todo:
        m = todo.pop()
        if m in steps and m not in used:
            used.add(m)
            todo.extend(steps[m][1])
    return {m: steps[m][0] for m in sorted(used)}


def code_record(path, steps: dict | None = None) -> dict:
    """What ``done.json`` records about the code a step ran: the package version (provenance), the
    SHA-256 of the notebook's code cells and the versions of the step modules it uses."""
    code = notebook_code(path)
    return {
        "wsss_edu": wsss_edu.__version__,
        "notebook_code_sha256": hashlib.sha256(code.encode()).hexdigest(),
        "step_versions": notebook_steps(code, step_code_versions() if steps is None else steps),
    }


def rerun_reason(step_dir: Path, params: dict, record: dict) -> str | None:
    """Why the step in ``step_dir`` must run (again) with ``params`` and the code ``record``
    (:func:`code_record`), or None when its ``done.json`` says it finished with both."""
    marker = step_dir / "done.json"
    if not marker.exists():
        return "not finished before"
    try:
        done = json.loads(marker.read_text())
    except ValueError:
        return f"{marker} does not parse"
    if done.get("parameters") != json.loads(json.dumps(params)):
        return "its parameters changed"
    if "notebook_code_sha256" not in done or "step_versions" not in done:
        return "its done.json records no code versions (written before wsss_edu recorded them)"
    if done["notebook_code_sha256"] != record["notebook_code_sha256"]:
        return "the notebook's code changed since it finished"
    old, new = done["step_versions"], record["step_versions"]
    changed = [
        f"{m} {old.get(m, 'unused')} -> {new.get(m, 'unused')}"
        for m in sorted(set(old) | set(new))
        if old.get(m) != new.get(m)
    ]
    if changed:
        return f"step code changed since it finished ({', '.join(changed)})"
    return None


def run_step(path, params: dict, step_dir: Path, timeout: int, execute=None, record=None) -> float:
    """Execute one notebook into ``step_dir`` (executed notebook, log.txt); returns seconds.
    The kernel's progress bars write plain lines into log.txt as they go (``WSSS_PROGRESS=log``
    unless set otherwise: :func:`wsss_edu.progress.headless_kernels`); its OpenMP threads wait
    passively (:func:`wsss_edu.threads.quiet_openmp`). ``done.json`` records the
    parameters and the code ``record`` (default: :func:`code_record` of ``path``, taken before
    it runs). ``execute`` (tests): a replacement for papermill.execute_notebook."""
    execute = execute or import_papermill().execute_notebook
    record = code_record(path) if record is None else record
    step_dir.mkdir(parents=True, exist_ok=True)
    (step_dir / "done.json").unlink(missing_ok=True)
    t0 = time.time()
    with open(step_dir / "log.txt", "w") as log:
        log.write(f"# {Path(path).name} with {json.dumps(params, default=str)}\n")
        log.flush()
        with headless_kernels(), quiet_openmp():
            execute(
                str(path),
                str(step_dir / Path(path).name),
                parameters=params,
                kernel_name="python3",
                cwd=str(Path(path).parent),
                progress_bar=False,
                execution_timeout=timeout,
                log_output=True,
                stdout_file=log,
                stderr_file=log,
            )
    seconds = time.time() - t0
    write_text_atomic(
        step_dir / "done.json",
        json.dumps(
            {
                "parameters": params,
                **record,
                "seconds": round(seconds, 1),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
            indent=2,
            default=str,
        ),
    )
    return seconds


def run_pipeline(
    output,
    dataset: str = "toy",
    data_root: str = "",
    profile: str = "full",
    device: str = "auto",
    seed: int = 0,
    only=None,
    overrides=None,
    boxes_dataset: str | None = None,
    boxes_data_root: str = "",
    force: bool = False,
    timeout: int = 86400,
    notebooks_dir=None,
    execute=None,
    log=print,
) -> dict:
    """Run the course's notebooks in order into ``output`` (see the module docstring); returns
    {notebook: 'ran' | 'skipped'}. A step is skipped when its done.json matches its parameters
    and code (:func:`rerun_reason`; ``force`` runs every step). Stops at the first failing step,
    naming its log."""
    paths = notebook_paths(notebooks_dir, only)  # none found: an error before anything is written
    import_papermill()  # missing: an error naming the extra, ditto
    output, data_root, boxes_data_root = (
        user_path(p) for p in (output, data_root, boxes_data_root)
    )
    output.mkdir(parents=True, exist_ok=True)
    if boxes_dataset is None:
        boxes_dataset, boxes_data_root = (
            (dataset, data_root) if dataset in BOXES_DATASETS else ("toy", "")
        )
    if boxes_dataset not in BOXES_DATASETS:
        raise ParameterError(
            f"--boxes-dataset {boxes_dataset!r}: paper 000's notebooks take one of {BOXES_DATASETS}"
        )
    shared = dict(
        DATASET=dataset,
        DATA_ROOT=str(data_root or ""),
        OUTPUT_DIR=str(output),
        PROFILE=profile,
        DEVICE=device,
        SEED=seed,
        BOXES_DATASET=boxes_dataset,
        BOXES_DATA_ROOT=str(boxes_data_root or ""),
    )
    overrides = overrides or {}
    valids = {p.name: notebook_parameters(p) for p in paths}
    check_overrides(paths, overrides, valids)
    plan = [(p, step_parameters(p, shared, overrides, valids[p.name])) for p in paths]
    for path, params in plan:  # every value within its rule before hours of compute
        check_parameter_values(params, path.stem)
    check_settings()  # WSSS_PROGRESS / WSSS_PROGRESS_SECONDS too
    status, times, steps = {}, {}, step_code_versions()
    for path, params in plan:
        step_dir = output / "steps" / path.stem
        record = code_record(path, steps)
        reason = "forced (--force)" if force else rerun_reason(step_dir, params, record)
        if reason is None:
            status[path.stem] = "skipped"
            log(f"{path.stem}: done before with the same parameters and code, skipped")
            continue
        log(f"{path.stem}: running ({reason}; log: {step_dir / 'log.txt'})")
        try:
            times[path.stem] = run_step(path, params, step_dir, timeout, execute, record)
        except Exception as e:
            write_report(output)
            raise RuntimeError(
                f"step {path.stem} failed ({type(e).__name__}); its log: "
                f"{step_dir / 'log.txt'}, the executed notebook: "
                f"{step_dir / path.name}. Fix and rerun the same command: finished "
                f"steps are skipped."
            ) from e
        status[path.stem] = "ran"
        log(f"{path.stem}: done in {times[path.stem]:.0f} s")
    report = write_report(output)
    log(f"report: {report}")
    return status


def step_times(output) -> dict:
    """{notebook: seconds} from the steps' done.json."""
    out = {}
    for marker in sorted(Path(output).glob("steps/*/done.json")):
        out[marker.parent.name] = json.loads(marker.read_text()).get("seconds")
    return out


def machine() -> str:
    """One line: the host, Python, torch and the GPUs seen."""
    import torch

    gpus = torch.cuda.device_count()
    names = sorted({torch.cuda.get_device_name(i) for i in range(gpus)}) if gpus else []
    return (
        f"{platform.node()} · Python {platform.python_version()} · torch {torch.__version__} · "
        f"{gpus} GPU(s) {', '.join(names)}".rstrip()
    )


def write_report(output) -> Path:
    """``<output>/report.md``: the steps and their times, each notebook's numbers, the methods
    side by side (notebook 08's table, when it ran) and the papers' tables next to the numbers
    measured here."""
    output = Path(output)
    metrics = load_all_metrics(output)
    times = step_times(output)
    lines = [
        "# Full-scale run: report",
        "",
        f"Output folder: `{output}`  ",
        f"Machine: {machine()}",
        "",
        "## Steps",
        "",
        "| notebook | seconds | executed notebook |",
        "| --- | ---: | --- |",
    ]
    for nb, s in times.items():
        lines.append(f"| {nb} | {s} | `steps/{nb}/{nb}.ipynb` |")
    lines += ["", "## The methods side by side", ""]
    side = output / "08_side_by_side" / "side_by_side.md"
    lines.append(side.read_text() if side.exists() else "*Notebook 08 has not run yet.*")
    lines += [
        "",
        "## Next to the papers",
        "",
        "The papers measured on their datasets (named in each heading) with their networks; "
        "compare the trend between rows, and the numbers only where the dataset is the same.",
        "",
        compare.paper_comparison(metrics),
        "## Every recorded number",
        "",
        results_table(metrics, times),
    ]
    path = output / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def ensure_metrics(
    output_dir,
    params: dict | None = None,
    run=None,
    methods=compare.METHODS,
    run_missing: bool = True,
    log=print,
) -> dict:
    """The recorded numbers under ``output_dir``, after running every notebook whose numbers the
    table needs but which has not recorded them: ``run(prefixes, params)``, by default
    :func:`run_pipeline` into the same folder (its steps, logs and resume).
    ``params``: what the notebooks share (DATASET, DATA_ROOT, PROFILE, DEVICE, SEED).
    ``run_missing=False`` runs nothing and leaves the missing numbers out (shown as –)."""
    metrics = load_all_metrics(output_dir)
    missing = compare.missing_notebooks(metrics, methods)
    if missing and not run_missing:
        log(f"not recorded (left out): {missing}")
    elif missing:
        log(f"running the notebooks whose numbers are missing: {missing}")
        p = dict(params or {})
        if run is None:

            def run(only, p):
                return run_pipeline(
                    output_dir,
                    p.get("DATASET", "toy"),
                    p.get("DATA_ROOT", ""),
                    p.get("PROFILE", "quick"),
                    p.get("DEVICE", "auto"),
                    p.get("SEED", 0),
                    only=only,
                    log=log,
                )

        run([nb.split("_")[0] for nb in missing], p)
        metrics = load_all_metrics(output_dir)
        still = compare.missing_notebooks(metrics, methods)
        if still:
            raise RuntimeError(
                f"{still} ran but did not record the numbers the table needs; "
                f"see their executed notebooks under {output_dir}/steps"
            )
    return metrics


def check_options(args) -> None:
    """Refuse a malformed option at once, not when the step that uses it starts hours later."""
    if args.shard is not None:
        shard_spec(args.shard)
    if args.train_processes is not None and args.train_processes < 1:
        raise ParameterError(
            f"--train-processes {args.train_processes}: give a whole number >= 1 "
            "(1 trains in one process)"
        )
    if args.shard_wait is not None and args.shard_wait < 0:
        raise ParameterError(f"--shard-wait {args.shard_wait}: give the seconds to wait, >= 0")
    if args.timeout < 1:
        raise ParameterError(f"--timeout {args.timeout}: give the seconds a cell may run, >= 1")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", default="voc", help="toy | voc | cityscapes | camvid | coco")
    ap.add_argument(
        "--data-root",
        default="",
        help="the dataset's folder (python -m wsss_edu.download fetches one)",
    )
    ap.add_argument("--output", default="runs/full", help="OUTPUT_DIR shared by every step")
    ap.add_argument("--profile", default="full", help="full (the papers' settings) | quick")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="notebook prefixes, e.g. 03 04 05")
    ap.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        help="KEY=VALUE for every notebook defining KEY, or NN:KEY=VALUE for one",
    )
    ap.add_argument(
        "--boxes-dataset", default=None, help="paper 000's dataset (toy | cityscapes | camvid)"
    )
    ap.add_argument("--boxes-data-root", default="")
    ap.add_argument(
        "--train-processes",
        type=int,
        default=None,
        help="processes per training step under torchrun (default: one per GPU)",
    )
    ap.add_argument("--shard", default=None, help="i/n: this machine's share of the CRF passes")
    ap.add_argument(
        "--shard-wait",
        type=int,
        default=None,
        help="seconds a machine waits for the other shards of a pass (default: stop)",
    )
    ap.add_argument("--force", action="store_true", help="rerun finished steps too")
    ap.add_argument("--timeout", type=int, default=86400, help="per-cell timeout, seconds")
    ap.add_argument(
        "--notebooks",
        default=None,
        metavar="DIR",
        help="the folder of the course notebooks (default: the checkout's notebooks/)",
    )
    args = ap.parse_args(argv)
    check_options(args)
    if args.train_processes is not None:
        os.environ["WSSS_TRAIN_PROCESSES"] = str(args.train_processes)  # the kernels inherit it
    if args.shard is not None:
        os.environ["WSSS_SHARD"] = args.shard
    if args.shard_wait is not None:
        os.environ["WSSS_SHARD_WAIT"] = str(args.shard_wait)
    print(machine())
    try:
        run_pipeline(
            args.output,
            args.dataset,
            args.data_root,
            args.profile,
            args.device,
            args.seed,
            args.only,
            split_overrides(args.param),
            args.boxes_dataset,
            args.boxes_data_root,
            args.force,
            args.timeout,
            notebooks_dir=args.notebooks,
        )
    except ModuleNotFoundError as e:
        if e.name != "papermill":
            raise
        ap.error(str(e))  # not a traceback: the message names the install command
    return 0


if __name__ == "__main__":
    sys.exit(main())
