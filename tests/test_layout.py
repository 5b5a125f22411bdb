"""The package's structure: its modules import each other at the top, in one direction."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "wsss_edu"


def _relative_imports(tree):
    """(node, imported module names) of every ``from . import x`` / ``from .x import y``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            yield node, [node.module] if node.module else [a.name for a in node.names]


def _local_imports(path: Path) -> list:
    """The package imports inside functions of the module at ``path`` with no comment saying why
    (on their line or the line above): ``[(line number, text)]``."""
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    return [(node.lineno, lines[node.lineno - 1].strip()) for node, _ in _relative_imports(tree)
            if id(node) in inside and "#" not in lines[node.lineno - 1] + lines[node.lineno - 2]]


def test_local_imports_are_found(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from .a import b\n\n\ndef g():\n    from .c import d\n\n    # spawned workers: keep torch out\n"
                 "    from .e import h\n    return d, h\n")
    assert _local_imports(f) == [(5, "from .c import d")]


def test_the_package_imports_itself_at_module_level():
    """A reader of a function sees its dependencies at the top of the module; a function-local
    import of the package stays only with a comment that says why."""
    found = {p.name: _local_imports(p) for p in sorted(PACKAGE.glob("*.py"))}
    assert not {k: v for k, v in found.items() if v}


def test_the_module_graph_has_no_cycles():
    """Each module depends on modules below it (a cycle is a misplaced function: the VOC palette
    once lived in viz, which toy needed and which needed toy)."""
    graph = {p.stem: {m.split(".")[0] for _, ms in _relative_imports(ast.parse(p.read_text())) for m in ms}
             for p in PACKAGE.glob("*.py")}
    done, path = set(), []

    def visit(m):
        assert m not in path, f"import cycle: {' -> '.join(path[path.index(m):] + [m])}"
        if m in done or m not in graph:
            return
        path.append(m)
        for n in sorted(graph[m]):
            visit(n)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)
