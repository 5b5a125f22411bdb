"""Build a course notebook from a plain-text source with cell markers (an authoring aid).

The source is a Python file whose cells start with lines ``# %% [markdown]``, ``# %%`` (code) or
``# %% tags=["parameters"]``; markdown cells have their lines prefixed with ``# ``. The .ipynb it
writes is the file learners open and the tests execute; keep them in step by rebuilding after an
edit of the source (``python tools/nbbuild.py notebooks/src/00_*.py``).
"""
import json
import re
import sys
import uuid
from pathlib import Path

import nbformat


def parse(text):
    cells, cur = [], None
    for line in text.splitlines():
        m = re.match(r"^# %%(.*)$", line)
        if m:
            if cur:
                cells.append(cur)
            arg = m.group(1).strip()
            kind = "markdown" if arg.startswith("[markdown]") else "code"
            t = re.search(r"tags=(\[.*\])", arg)  # '# %% tags=[...]' or '# %% [markdown] tags=[...]'
            tags = json.loads(t.group(1)) if t else []
            cur = {"kind": kind, "tags": tags, "lines": []}
            continue
        if cur is None:
            continue
        if cur["kind"] == "markdown":
            line = line[2:] if line.startswith("# ") else line[1:] if line.startswith("#") else line
        cur["lines"].append(line)
    if cur:
        cells.append(cur)
    return cells


def build(src: Path, dst: Path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    old_ids = []
    if dst.exists():
        old_ids = [c.get("id") for c in json.loads(dst.read_text())["cells"]]
    for k, c in enumerate(parse(src.read_text())):
        body = "\n".join(c["lines"]).strip("\n")
        cell = (nbformat.v4.new_markdown_cell(body) if c["kind"] == "markdown"
                else nbformat.v4.new_code_cell(body))
        cell.id = old_ids[k] if k < len(old_ids) and old_ids[k] else uuid.uuid4().hex[:8]
        if c["tags"]:
            cell.metadata["tags"] = c["tags"]
        nb.cells.append(cell)
    nbformat.validate(nb)
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    for s in sys.argv[1:]:
        s = Path(s)
        build(s, s.parent.parent / (s.stem + ".ipynb"))
        print("built", s.parent.parent / (s.stem + ".ipynb"))
