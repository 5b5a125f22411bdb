"""Notebook housekeeping: strip outputs (keeping execution counts, like ``nbstripout
--keep-count``) and check the course's conventions. ``python -m wsss_edu.nbtools strip|check``."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def strip_outputs(path) -> bool:
    """Remove outputs and widget state from a notebook in place; returns True when it changed."""
    path = Path(path)
    text = path.read_text()
    nb = json.loads(text)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
        cell.get("metadata", {}).pop("execution", None)
    nb.get("metadata", {}).pop("widgets", None)
    new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    if new != text:
        path.write_text(new)
        return True
    return False


def convention_problems(path) -> list[str]:
    """What a course notebook gets wrong: the first code cell not tagged ``parameters``, a kernel
    other than python3, stored outputs, cells without ids, no summary/exercises at the end."""
    path = Path(path)
    nb = json.loads(path.read_text())
    out = []
    cells = nb.get("cells", [])
    code = [c for c in cells if c.get("cell_type") == "code"]
    if not code or "parameters" not in code[0].get("metadata", {}).get("tags", []):
        out.append("first code cell is not tagged `parameters`")
    if nb.get("metadata", {}).get("kernelspec", {}).get("name") != "python3":
        out.append("kernelspec name is not python3")
    if any(c.get("outputs") for c in code):
        out.append("outputs are stored (run `make strip`)")
    if any("id" not in c for c in cells):
        out.append("cells without ids")
    tail = " ".join("".join(c.get("source", "")) for c in cells[-3:]
                    if c.get("cell_type") == "markdown").lower()
    if "summary" not in tail or "exercise" not in tail:
        out.append("does not end with a summary and exercises")
    return [f"{path.name}: {p}" for p in out]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("strip", "check"):
        print("usage: python -m wsss_edu.nbtools strip|check NOTEBOOK...")
        return 2
    problems = []
    for p in argv[1:]:
        if argv[0] == "strip":
            if strip_outputs(p):
                print(f"stripped {p}")
        else:
            problems += convention_problems(p)
    print("\n".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
