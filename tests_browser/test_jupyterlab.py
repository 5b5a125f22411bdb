"""The notebooks where learners use them: JupyterLab driven by headless Chromium.

A JupyterLab server runs on 127.0.0.1 (a free port, a random token, no browser) on a temporary copy
of ``notebooks/`` (no outputs written into the repository), with the .venv's ``python3`` kernel and
``WSSS_OUTPUT_DIR`` in its environment (default ``runs/test``: the kernels inherit it and read the
networks the nbval run of ``make test`` trained). For each notebook below, Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by selenium) opens it, clicks Run > Run All Cells, waits
until every code cell has an execution count and the kernel is idle, and checks:

* no output of type ``error`` in any cell (read from JupyterLab's notebook model, since the page
  renders errors and stderr alike), and the kernel alive;
* every figure (``image/png`` output) is an ``<img>`` the browser decoded;
* every widget output is a rendered widget view: no "Error displaying widget", no
  "Loading widget..." left; one ``interact`` box (sliders + "Run Interact") per ``viz.sliders``
  call in the notebook;
* each ``interact``: "Run Interact" draws a figure into its output; the first slider moved with the
  keyboard (arrow key on its handle, as a learner would) changes its value; "Run Interact" again
  draws a different figure (the image's data changed); no traceback in the widget's output.

Without chromium / chromedriver / selenium the test is skipped with the fix in the reason; with
``WSSS_REQUIRE_BROWSER=1`` (CI, set by ``.ci/run``) that is a failure instead. On a failure the
page's screenshot, the notebook's cells and the server log go to ``runs/browser/``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("WSSS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("WSSS_CHROMEDRIVER", "/usr/bin/chromedriver")
REQUIRE = os.environ.get("WSSS_REQUIRE_BROWSER", "") not in ("", "0")
ARTIFACTS = Path(os.environ.get("WSSS_BROWSER_ARTIFACTS", REPO / "runs" / "browser"))
NOTEBOOK_TIMEOUT = float(os.environ.get("WSSS_BROWSER_TIMEOUT", 600))  # seconds per Run All
INTERACT_TIMEOUT = 120  # seconds for one "Run Interact" figure
FIX = (
    "install Debian's headless browser and its WebDriver: `apt-get install chromium "
    "chromium-driver` (.ci/run does it), and selenium with `make env`"
)

# 01 (paper 000's aleatoric logits, sliders), one notebook per method: 02b (paper 000, no slider:
# the cheaper of 02 / 02b), 03 (paper 001), 06 (paper 002), 07 (paper 003). Cheap ones first. Each
# reads what the nbval run trained from the cache (02b's Table 2 too: 12 s instead of 3 min).
NOTEBOOKS = [
    "01_aleatoric_logits",
    "03_classification_and_cam",
    "06_urn_uncertainty_weights",
    "07_rrm_end_to_end",
    "02b_bootstrapping_multiclass",
]
if os.environ.get("WSSS_BROWSER_NOTEBOOKS"):  # e.g. "01,07" to drive a few while developing
    _want = os.environ["WSSS_BROWSER_NOTEBOOKS"].split(",")
    NOTEBOOKS = [n for n in NOTEBOOKS if any(n.startswith(w.strip()) for w in _want)]


def _missing() -> list[str]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    return missing


@pytest.fixture(scope="session")
def browser_tools():
    missing = _missing()
    if missing:
        msg = f"missing {', '.join(missing)}: {FIX}"
        if REQUIRE:
            pytest.fail(f"WSSS_REQUIRE_BROWSER is set but {msg}", pytrace=False)
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running JupyterLab server: its URL, token, notebook folder and log."""

    def __init__(self, proc, port, token, root, log):
        self.proc, self.port, self.token, self.root, self.log = proc, port, token, root, log
        self.base = f"http://127.0.0.1:{port}"

    def api(self, path, method="GET"):
        req = urllib.request.Request(
            f"{self.base}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n=60) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def shutdown_kernels(self):
        for s in self.api("/api/sessions"):
            self.api(f"/api/sessions/{s['id']}", "DELETE")


@pytest.fixture(scope="module")
def lab(browser_tools, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jupyterlab")
    root = tmp / "notebooks"
    root.mkdir()
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        shutil.copy2(nb, root / nb.name)
    settings = tmp / "settings"
    # no "Would you like to receive official Jupyter news?" toast (no internet to fetch it anyway)
    notif = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notif.parent.mkdir(parents=True)
    notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    for d in ("runtime", "config", "data", "ipython", "workspaces"):
        (tmp / d).mkdir()

    env = dict(os.environ)
    env.setdefault("WSSS_OUTPUT_DIR", str(REPO / "runs" / "test"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MPLBACKEND", None)  # the kernel's inline backend, as for a learner
    # Jupyter's and IPython's per-user folders in the temporary folder: nothing from ~/.jupyter,
    # ~/.local/share/jupyter (a user's own "python3" kernel) or ~/.ipython startup files.
    env.update(
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        IPYTHONDIR=str(tmp / "ipython"),
    )

    # the kernel the notebooks name, "python3", as the server will find it: this environment's
    specs = json.loads(
        subprocess.run(
            [sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    spec = specs["kernelspecs"]["python3"]
    exe = spec["spec"]["argv"][
        0
    ]  # "python" is run as the server's own interpreter by jupyter_client
    assert exe in ("python", "python3") or Path(exe).resolve().is_relative_to(
        Path(sys.prefix).resolve()
    ), (
        f"kernel python3 ({spec['resource_dir']}) runs {exe}, not this environment's python ({sys.executable})"
    )

    token = secrets.token_hex(24)
    log = tmp / "server.log"
    proc = port = None
    for _attempt in range(3):  # a free port can be taken between finding it and binding it
        port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            "--expose-app-in-browser",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI runs as root
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        server = Lab(proc, port, token, root, log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                server.api("/api/status")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        if proc.poll() is None and time.monotonic() < deadline:
            break
        if proc.poll() is None:
            _stop(proc)
            pytest.fail(
                f"JupyterLab did not answer within 120 s; its log:\n{server.log_tail()}",
                pytrace=False,
            )
    else:
        pytest.fail(
            f"JupyterLab exited (code {proc.returncode}); its log:\n{server.log_tail()}",
            pytrace=False,
        )

    yield server

    try:  # the server's own shutdown: kernels first, then the server
        server.api("/api/shutdown", "POST")
    except (urllib.error.URLError, OSError):
        pass
    _stop(proc)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy2(log, ARTIFACTS / "server.log")


def _stop(proc, wait=30):
    try:
        proc.wait(wait)
        return
    except subprocess.TimeoutExpired:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(15)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


@pytest.fixture
def browser(lab, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # explicit paths: selenium then never runs Selenium Manager (which would download a driver)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()
    lab.shutdown_kernels()


# ---------------------------------------------------------------------------------------------
# JupyterLab's state, read through window.jupyterapp (--expose-app-in-browser)

NOTEBOOK_STATE = """
const panel = window.jupyterapp.shell.currentWidget;
if (!panel || !panel.content || !panel.content.model) return null;
const model = panel.content.model, cells = [];
for (let i = 0; i < model.cells.length; i++) {
  const c = model.cells.get(i).toJSON();
  if (c.cell_type !== 'code') continue;
  const src = Array.isArray(c.source) ? c.source.join('') : c.source;
  cells.push({index: i, count: c.execution_count, empty: src.trim() === '', source: src.slice(0, 300),
              state: model.cells.get(i).executionState || null,
              outputs: c.outputs.map(o => ({type: o.output_type, ename: o.ename || null,
                                            evalue: o.evalue || null, traceback: o.traceback || null,
                                            mimes: Object.keys(o.data || {})}))});
}
return {kernel: panel.sessionContext.kernelDisplayStatus, path: panel.context.path, cells: cells};
"""

# everything the page shows of rendered outputs; a widget output is an output area child holding a
# widget view (ipywidgets' renderer sets no data-mime-type), or its error / loading placeholder
PAGE_STATE = """
const panel = window.jupyterapp.shell.currentWidget.node;
const outs = [...panel.querySelectorAll('.jp-OutputArea-output')];
const imgs = [...panel.querySelectorAll('.jp-OutputArea-output[data-mime-type="image/png"] img')];
const untyped = outs.filter(o => !o.hasAttribute('data-mime-type'));
return {
  images: imgs.length,
  images_broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length,
  widget_views: untyped.filter(o => [...o.children].some(c => c.classList.contains('jupyter-widgets'))).length,
  widget_errors: outs.map(o => o.textContent).filter(t => /Error displaying widget|Error rendering output/i.test(t))
                     .map(t => t.slice(0, 300)),
  widget_loading: untyped.filter(o => /Loading widget/i.test(o.textContent)).length,
  interacts: panel.querySelectorAll('.widget-interact').length,
  dialogs: [...document.querySelectorAll('.jp-Dialog')].map(d => d.textContent.slice(0, 500)),
};
"""

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\w*(Error|Exception)\b", re.M)


def _errors(state) -> list[str]:
    found = []
    for c in state["cells"]:
        for o in c["outputs"]:
            if o["type"] == "error":
                tb = ANSI.sub("", "\n".join(o["traceback"] or []))
                found.append(
                    f"cell {c['index']} ({c['source'][:80]!r}...): {o['ename']}: {o['evalue']}\n{tb[-3000:]}"
                )
    return found


def _wait(what, fn, timeout, interval=1.0):
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@contextmanager
def _evidence(driver, lab, name):
    """On any failure: screenshot, the notebook's cells as JupyterLab holds them, the page's
    state, the browser's console and the server log into runs/browser/ (named in the error)."""
    try:
        yield
    except BaseException as exc:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        notes = []
        for label, action in (
            ("screenshot", lambda: driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))),
            (
                "cells",
                lambda: (ARTIFACTS / f"{name}.cells.json").write_text(
                    json.dumps(driver.execute_script(NOTEBOOK_STATE), indent=1)
                ),
            ),
            (
                "page",
                lambda: (ARTIFACTS / f"{name}.page.json").write_text(
                    json.dumps(driver.execute_script(PAGE_STATE), indent=1)
                ),
            ),
            (
                "console",
                lambda: (ARTIFACTS / f"{name}.console.log").write_text(
                    "\n".join(f"{e['level']} {e['message']}" for e in driver.get_log("browser"))
                ),
            ),
            (
                "server log",
                lambda: (ARTIFACTS / "server.log").write_text(lab.log.read_text(errors="replace")),
            ),
        ):
            try:
                action()
            except Exception as e:  # keep the original failure; note what could not be saved
                notes.append(f"{label} not saved: {e.__class__.__name__}: {str(e)[:200]}")
        extra = "\n".join(
            [
                f"evidence in {ARTIFACTS}/{name}.*",
                *notes,
                "JupyterLab log (tail):",
                lab.log_tail(15),
            ]
        )
        if isinstance(exc, AssertionError):
            raise AssertionError(f"{exc}\n{extra}") from None
        raise


def _interacts_expected(name) -> int:
    nb = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())
    return sum(
        len(re.findall(r"^[^#\n]*\bviz\.sliders\(", "".join(c["source"]), re.M))
        for c in nb["cells"]
        if c["cell_type"] == "code"
    )


def _open(driver, lab, name):
    driver.get(f"{lab.base}/lab/tree/{name}.ipynb?reset&token={lab.token}")
    _wait(
        f"{name} to open",
        lambda: driver.execute_script(
            "const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            "return !!(p && p.context && p.context.path.endsWith(arguments[0]) && p.node.querySelector('.jp-Cell'))",
            f"{name}.ipynb",
        ),
        120,
        0.5,
    )

    def kernel_idle():
        state = driver.execute_script(NOTEBOOK_STATE)
        dialogs = driver.execute_script(PAGE_STATE)["dialogs"]
        assert not dialogs, f"a dialog opened instead of the kernel: {dialogs}"
        return state and state["kernel"] == "idle"

    _wait("the kernel to start (idle)", kernel_idle, 120, 0.5)


def _run_all(driver, name):
    from selenium.webdriver.common.by import By

    # start from no outputs and no execution counts, whatever the file holds (make strip keeps counts)
    driver.execute_script(
        "return window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')"
    )
    _wait(
        "the cleared notebook",
        lambda: all(
            c["count"] is None and not c["outputs"]
            for c in driver.execute_script(NOTEBOOK_STATE)["cells"]
        ),
        10,
        0.2,
    )
    [menu] = [
        e
        for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
        if e.text.strip() == "Run"
    ]
    menu.click()
    item = _wait(
        "Run > Run All Cells",
        lambda: driver.find_elements(
            By.CSS_SELECTOR, '.lm-Menu-item[data-command="runmenu:run-all"]'
        ),
        10,
        0.2,
    )[0]
    item.click()

    settled = {"n": 0}

    def finished():
        state = driver.execute_script(NOTEBOOK_STATE)
        errors = _errors(state)
        if errors:
            raise AssertionError(f"{name}: a cell raised an error:\n" + "\n\n".join(errors))
        assert state["kernel"] not in ("dead", "unknown", "terminating"), (
            f"{name}: kernel {state['kernel']}"
        )
        done = state["kernel"] == "idle" and all(
            c["count"] is not None and c["state"] != "running"
            for c in state["cells"]
            if not c["empty"]
        )
        settled["n"] = settled["n"] + 1 if done else 0
        return state if settled["n"] >= 2 else None  # idle and complete on two polls in a row

    return _wait(
        f"{name}: every code cell executed and the kernel idle", finished, NOTEBOOK_TIMEOUT, 2.0
    )


def _interact_image(box):
    """The newest figure's ``src`` under the sliders, read in one script call: the widget output
    is cleared and redrawn while we poll, and an element found in one call can be gone by the next
    (StaleElementReferenceException, seen on CI)."""
    return box.parent.execute_script(
        "const imgs = arguments[0].querySelectorAll('.widget-output img');"
        "return imgs.length ? imgs[imgs.length - 1].getAttribute('src') : null;",
        box,
    )


def _interact_errors(box) -> list[str]:
    texts = box.parent.execute_script(
        "return Array.from(arguments[0].querySelectorAll("
        "'.widget-output .jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]'))"
        ".map(e => e.innerText);",
        box,
    )
    return [t for t in texts if TRACEBACK.search(t)]


def _press_run_interact(driver, box, before, what):
    button = [
        b for b in box.find_elements("css selector", "button") if b.text.strip() == "Run Interact"
    ]
    assert button, f"{what}: no 'Run Interact' button"
    # interact_manual disables the button while its function runs: a click then would be lost
    _wait(f"{what}: 'Run Interact' enabled", button[0].is_enabled, 60, 0.2)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button[0])
    button[0].click()

    def drawn():
        errors = _interact_errors(box)
        if errors:
            raise AssertionError(f"{what}: the callback raised:\n" + "\n".join(errors))
        src = _interact_image(box)
        return src if src and src != before else None

    try:
        src = _wait(f"{what}: a new figure under the sliders", drawn, INTERACT_TIMEOUT, 0.5)
    except AssertionError as exc:
        shown = driver.execute_script(
            "return Array.from(arguments[0].querySelectorAll('.widget-output .jp-OutputArea-output'))"
            ".map(e => e.innerText);",
            box,
        )
        raise AssertionError(f"{exc}; the output shows {shown}") from None
    _wait(
        f"{what}: 'Run Interact' enabled again (the function returned)",
        button[0].is_enabled,
        60,
        0.2,
    )
    return src


def _move_slider(driver, box, what):
    from selenium.webdriver.common.keys import Keys

    sliders = box.find_elements("css selector", ".widget-slider")
    assert sliders, f"{what}: no slider in the interact box"
    slider = sliders[0]
    label = slider.find_element("css selector", ".widget-label").text
    handle = slider.find_element("css selector", ".noUi-handle")
    readout = slider.find_element("css selector", ".widget-readout")
    # the readout shows the widget's value as ipywidgets formats it; the handle's aria-valuenow is
    # rounded to one decimal (0.25 and 0.35 both read "0.3"), so it only picks the direction
    old = readout.text
    at_top = float(handle.get_attribute("aria-valuenow")) >= float(
        handle.get_attribute("aria-valuemax")
    )
    key = Keys.ARROW_LEFT if at_top else Keys.ARROW_RIGHT
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", handle)
    handle.send_keys(key, key)  # two steps, as a learner tapping the arrow key
    new = _wait(
        f"{what}: slider {label!r} to move from {old}",
        lambda: readout.text if readout.text != old else None,
        10,
        0.2,
    )
    return label, old, new


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_in_jupyterlab(name, lab, browser):
    t0 = time.monotonic()
    with _evidence(browser, lab, name):
        _open(browser, lab, name)
        t_open = time.monotonic()
        state = _run_all(browser, name)
        t_run = time.monotonic()

        assert state["kernel"] == "idle"
        assert not _errors(state)
        counts = [c["count"] for c in state["cells"] if not c["empty"]]
        assert counts == list(range(1, len(counts) + 1)), (
            f"{name}: cells ran out of order: {counts}"
        )
        model_images = sum("image/png" in o["mimes"] for c in state["cells"] for o in c["outputs"])
        model_widgets = sum(
            "application/vnd.jupyter.widget-view+json" in o["mimes"]
            for c in state["cells"]
            for o in c["outputs"]
        )

        # the page: figures decoded, widget views rendered (give the widget manager a moment)
        def rendered():
            page = browser.execute_script(PAGE_STATE)
            return (
                page
                if (
                    page["widget_loading"] == 0
                    and page["images_broken"] == 0
                    and page["images"] >= model_images
                )
                else None
            )

        try:
            page = _wait("figures and widgets to render", rendered, 30, 0.5)
        except AssertionError:
            page = browser.execute_script(PAGE_STATE)
        assert not page["dialogs"], f"dialogs open: {page['dialogs']}"
        assert page["images"] >= 1, f"{name}: no figure rendered ({model_images} image/png outputs)"
        assert page["images"] >= model_images, (
            f"{name}: {page['images']} of {model_images} figures rendered"
        )
        assert page["images_broken"] == 0, f"{name}: {page['images_broken']} figures did not decode"
        assert not page["widget_errors"], f"{name}: widget errors: {page['widget_errors']}"
        assert page["widget_loading"] == 0, (
            f"{name}: {page['widget_loading']} widgets still 'Loading widget...'"
        )
        assert page["widget_views"] >= min(model_widgets, 1), (
            f"{name}: {page['widget_views']} widget views rendered for {model_widgets} widget outputs"
        )

        expected = _interacts_expected(name)
        assert page["interacts"] == expected, (
            f"{name}: {page['interacts']} interact boxes rendered, {expected} viz.sliders calls"
        )
        assert model_widgets >= expected

        # each interact: draw, move a slider, draw again: a different figure, no traceback
        moved = []
        boxes = browser.find_elements("css selector", ".jp-NotebookPanel .widget-interact")
        for k, box in enumerate(boxes):
            what = f"{name}: interact {k + 1}/{len(boxes)}"
            first = _press_run_interact(browser, box, _interact_image(box), what)
            label, old, new = _move_slider(browser, box, what)
            _press_run_interact(
                browser, box, first, f"{what} after moving {label!r} {old} -> {new}"
            )
            assert not _interact_errors(box)
            moved.append(f"{label} {old}->{new}")

        # the browser's console: errors other than a resource that failed to load fail the test
        severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        js_errors = [m for m in severe if "Failed to load resource" not in m]
        if js_errors:
            raise AssertionError(
                f"{name}: errors in the browser's console:\n" + "\n".join(js_errors)
            )

        final = browser.execute_script(NOTEBOOK_STATE)
        if _errors(final):
            raise AssertionError(f"{name}: a cell raised an error:\n" + "\n\n".join(_errors(final)))
        assert final["kernel"] in ("idle", "busy"), (
            f"{name}: kernel {final['kernel']} after the sliders"
        )
    t_end = time.monotonic()
    print(
        f"{name}: open {t_open - t0:.0f} s, run all {t_run - t_open:.0f} s, sliders {t_end - t_run:.0f} s "
        f"({', '.join(moved) or 'no sliders'}); {page['images']} figures, {page['widget_views']} widget views"
    )
