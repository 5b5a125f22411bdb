"""nbval settings: only errors and assert cells decide (``--nbval-lax``); stderr and HTML are never
compared, so a new library warning cannot fail the suite."""


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr", "text/html", "application/javascript",
                                   "application/vnd.jupyter.widget-view+json")
