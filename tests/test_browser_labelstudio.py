"""In a real browser: Label Studio 1.23.2's editor and data manager with our backend, and report.html.

Headless Chromium from the system packages, driven by selenium through chromedriver. A test that
cannot get a browser FAILS with a message saying how to install one (`make browser`, which
`make test` runs, installs it where apt is available). The Label Studio and backend come from the
session fixtures in conftest.py; each test sets up its own project.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mlcdseg.demo.run import SAMPLES_FOLDER, DemoProject, set_up_project
from mlcdseg.labelstudio.client import LabelStudioClient
from mlcdseg.labelstudio.local_server import REPO_ROOT, BackendServer, LabelStudioServer
from mlcdseg.labelstudio.regions import mask_from_regions
from mlcdseg.model.stand_in import colour_rule_mask

pytestmark = pytest.mark.browser

#: Flags for a headless Chromium that makes no connection of its own (this machine, and CI
#: sandboxes, refuse many of them) and keeps no state between runs (a fresh --user-data-dir).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
INSTALL_HINT = (
    "`make browser` (run by `make test`) installs it as root where apt is available: "
    "apt-get install -y chromium chromium-driver; selenium comes from requirements-dev.txt "
    "(.venv/bin/pip install -r requirements-dev.txt)"
)
WAIT_S = 60.0


def _chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver) executables; the test fails loudly when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing = " and ".join(name for name, path in (("chromium", chromium), ("chromedriver", driver)) if path is None)
        pytest.fail(f"no browser for the browser tests: {missing} not found on PATH; {INSTALL_HINT}", pytrace=False)
    return chromium, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium under selenium with a fresh profile; FAILS (does not skip) without one."""
    try:
        from selenium import webdriver
    except ImportError:
        pytest.fail(f"selenium is not installed; {INSTALL_HINT}", pytrace=False)
    chromium, driver_path = _chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll `condition` until it returns something truthy (returned); fail naming `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
        except Exception as error:  # the page is still changing: elements come and go
            value, last_error = None, error
        else:
            last_error = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last error: {last_error})")
        time.sleep(0.25)


def _screenshot_is_not_blank(png: bytes) -> bool:
    """True when a screenshot holds more than a handful of colours (a rendered page, not an empty one)."""
    with Image.open(io.BytesIO(png)) as picture:
        colours = picture.convert("RGB").getcolors(maxcolors=1_000_000) or []
    return len(colours) > 20


# ---------------------------------------------------------------- report.html
def test_report_html_renders_its_plots_and_worst_case_pictures(
    browser: Any, fixtures_dir: Path, tmp_path: Path
) -> None:
    from mlcdseg.cli import main

    tasks = json.loads((fixtures_dir / "export_snapshot_full_predictions.json").read_text())
    for task in tasks:
        for annotation in task["annotations"]:
            annotation["lead_time"] = 8.0
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    assert main(["evaluate", str(export), "-o", str(tmp_path / "report"), "-q"]) == 0

    browser.get((tmp_path / "report" / "report.html").as_uri())

    _wait_for(lambda: browser.execute_script("return document.readyState") == "complete", "report.html to load")
    plots = browser.execute_script(
        "return Array.from(document.querySelectorAll('.plots svg')).map(s => s.getBoundingClientRect().height)"
    )
    assert len(plots) == 2 and all(height > 100 for height in plots), plots
    pictures = browser.execute_script(
        "return Array.from(document.querySelectorAll('.grid-worst img'))"
        ".map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])"
    )
    assert pictures and all(complete and natural > 0 and shown > 0 for complete, natural, shown in pictures), pictures
    assert "Review: what the pre-annotations saved" in browser.find_element("tag name", "body").text
    assert _screenshot_is_not_blank(browser.get_screenshot_as_png())
