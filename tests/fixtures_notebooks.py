"""Small notebooks written by tests (test_pipeline.py, test_cache_versions.py): a papermill
``parameters`` cell, then the given cells, for the runner's and the pipeline's own logic."""

import nbformat


def write_notebook(path, params: str, *cells: str, markdown: str = ""):
    """Write a Python 3 notebook to ``path``: the ``parameters``-tagged cell ``params``, a code cell
    per string in ``cells``, and a markdown cell ``markdown`` at the end when given."""
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell(params)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first] + [nbformat.v4.new_code_cell(c) for c in cells]
    if markdown:
        nb.cells.append(nbformat.v4.new_markdown_cell(markdown))
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path.write_text(nbformat.writes(nb))
