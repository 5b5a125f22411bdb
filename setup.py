"""The one build step pyproject.toml cannot declare: the wheel carries a copy of the course.

The notebooks, their students' versions and the data scripts live at the top of the repository
(where a learner of a checkout opens them), outside the package. ``build_py`` copies the files
``wsss_edu/course.py``'s ``COURSE_FILES`` names into ``wsss_edu/_course/`` of the build, so that an
installed package (``pip install <the repository>``, no checkout) can hand them to
``python -m wsss_edu.course copy DIR``; the git tree holds each file once. An editable install
skips the copy: the package finds the checkout itself. Everything else is in pyproject.toml; the
source distribution takes the same files through MANIFEST.in.
"""

import ast
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def course_patterns(module: Path = HERE / "wsss_edu" / "course.py") -> tuple:
    """``COURSE_FILES`` of wsss_edu/course.py, read without importing the package (its imports,
    torch and numpy among them, are not installed in an isolated build)."""
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "COURSE_FILES" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise RuntimeError(f"{module} defines no COURSE_FILES literal")


class build_py_with_course(build_py):
    """setuptools' build_py, then the course files into ``<build>/wsss_edu/_course/``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "wsss_edu" / "_course"
        files = sorted(
            {p for pattern in course_patterns() for p in HERE.glob(pattern) if p.is_file()}
        )
        if not any(p.relative_to(HERE).parts[0] == "notebooks" for p in files):
            raise RuntimeError(
                f"no course notebook under {HERE}/notebooks: the wheel would lack the "
                "course (an sdist built without MANIFEST.in?)"
            )
        for src in files:
            dst = target / src.relative_to(HERE)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


setup(cmdclass={"build_py": build_py_with_course})
