"""The package's structure: its modules import each other at the top, in one direction."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "wsss_edu"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")

# The layers of the package's map (its docstring): a module may import its own layer and those
# listed for it, nothing else. ``steps`` is the subpackage wsss_edu/steps/.
METHODS = {"label_uncertainty", "cam", "irnet", "models", "urn", "rrm"}
SUBSTRATE = {
    "toy",
    "datasets",
    "labels",
    "data",
    "io",
    "errors",
    "pretrained",
    "crf",
    "crf_torch",
    "metrics",
    "stats",
    "train",
    "distributed",
    "viz",
    "progress",
    "threads",
}
PLUMBING = {
    "params",
    "cache",
    "results",
    "parallel",
    "download",
    "runner",
    "pipeline",
    "compare",
    "nbtools",
    "versions",
    "course",
    "prepare_voc_trainaug",
    "write_toy_voc",
    "colab",
}
MAY_IMPORT = {
    "substrate": {"substrate"},
    "methods": {"substrate", "methods"},
    "steps": {"substrate", "methods", "steps", "plumbing"},
    "plumbing": {"substrate", "plumbing"},
}


def _name(path: Path) -> str:
    """The module's name inside the package: 'cam', 'steps.cam_step'."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _layer(name: str) -> str:
    if name.startswith("steps."):
        return "steps"
    return next(
        k
        for k, v in (("methods", METHODS), ("substrate", SUBSTRATE), ("plumbing", PLUMBING))
        if name in v
    )


def _relative_imports(tree, package: tuple = ()):
    """(node, imported module names inside wsss_edu) of every relative import of a module in the
    subpackage ``package`` (``()``: wsss_edu itself): ``from . import x`` / ``from .x import y`` /
    ``from ..x import y`` / ``from .steps import x``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package[: len(package) - (node.level - 1)]
            full = base + tuple(node.module.split(".")) if node.module else base
            targets = [full + (a.name,) for a in node.names] if full in {(), ("steps",)} else [full]
            yield node, [".".join(t[:2] if t[0] == "steps" else t[:1]) for t in targets]


def _graph() -> dict:
    """{module: the package modules it imports}."""
    return {
        _name(p): {
            m
            for _, ms in _relative_imports(
                ast.parse(p.read_text()), tuple(_name(p).split(".")[:-1])
            )
            for m in ms
        }
        for p in MODULES
    }


def _local_imports(path: Path) -> list:
    """The package imports inside functions of the module at ``path`` with no comment saying why
    (on their line or the line above): ``[(line number, text)]``."""
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    inside = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
    }
    return [
        (node.lineno, lines[node.lineno - 1].strip())
        for node, _ in _relative_imports(tree)
        if id(node) in inside and "#" not in lines[node.lineno - 1] + lines[node.lineno - 2]
    ]


def test_local_imports_are_found(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "from .a import b\n\n\ndef g():\n    from .c import d\n\n    # spawned workers: keep torch out\n"
        "    from .e import h\n    return d, h\n"
    )
    assert _local_imports(f) == [(5, "from .c import d")]


def test_the_package_imports_itself_at_module_level():
    """A reader of a function sees its dependencies at the top of the module; a function-local
    import of the package stays only with a comment that says why."""
    found = {_name(p): _local_imports(p) for p in MODULES}
    assert not {k: v for k, v in found.items() if v}


def test_the_module_graph_has_no_cycles():
    """Each module depends on modules below it (a cycle is a misplaced function: the VOC palette
    once lived in viz, which toy needed and which needed toy)."""
    graph = _graph()
    done, path = set(), []

    def visit(m):
        assert m not in path, f"import cycle: {' -> '.join(path[path.index(m) :] + [m])}"
        if m in done or m not in graph:
            return
        path.append(m)
        for n in sorted(graph[m]):
            visit(n)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def test_relative_imports_are_resolved_from_a_subpackage():
    tree = ast.parse(
        "from .. import cam, params\nfrom ..irnet import IRNet\nfrom .cam_step import load_cams\n"
    )
    assert [ms for _, ms in _relative_imports(tree, ("steps",))] == [
        ["cam", "params"],
        ["irnet"],
        ["steps.cam_step"],
    ]
    tree = ast.parse(
        "from .steps import cam_step\nfrom .steps.irnet_step import step2\nfrom . import io\n"
    )
    assert [ms for _, ms in _relative_imports(tree)] == [
        ["steps.cam_step"],
        ["steps.irnet_step"],
        ["io"],
    ]


def test_every_module_is_placed_in_one_layer_of_the_map():
    assert {
        _name(p) for p in MODULES if not _name(p).startswith("steps.")
    } == METHODS | SUBSTRATE | PLUMBING
    doc = (PACKAGE / "__init__.py").read_text()
    assert all(f"``{m}``" in doc or f" {m} " in doc for m in METHODS | SUBSTRATE | PLUMBING)
    assert all(_name(p).split(".")[-1] in doc for p in MODULES if _name(p).startswith("steps."))


def test_each_layer_imports_only_the_layers_below_it():
    """A paper's method (what a learner studies) reads without the cached steps and the plumbing;
    the substrate without the methods; the plumbing runs notebooks, it does not import the methods
    they call."""
    wrong = {
        (m, n)
        for m, deps in _graph().items()
        for n in deps
        if _layer(n) not in MAY_IMPORT[_layer(m)]
    }
    assert not wrong, sorted(wrong)
