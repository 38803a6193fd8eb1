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
from mlcdseg.errors import LabelStudioError
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


def _wait_for(condition: Callable[[], Any], what: str | Callable[[], str], timeout_s: float = WAIT_S) -> Any:
    """Poll `condition` until it returns something truthy (returned); fail naming `what` after the timeout.

    `what` may be a function, called only then, to describe the state the page was left in.
    """
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
        except (WebDriverException, LabelStudioError) as error:  # the page is still changing: elements come and go
            value, last_error = None, error
        else:
            last_error = None
        if value:
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {described} (last error: {last_error})")
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
    # the IoU histogram and precision@k curve, then (the fixture's prediction scores 0.9) the review curve and IoU by score
    plots = browser.execute_script(
        "return Array.from(document.querySelectorAll('.plots svg')).map(s => s.getBoundingClientRect().height)"
    )
    assert len(plots) == 4 and all(height > 100 for height in plots), plots
    pictures = browser.execute_script(
        "return Array.from(document.querySelectorAll('.grid-worst img'))"
        ".map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])"
    )
    assert pictures and all(complete and natural > 0 and shown > 0 for complete, natural, shown in pictures), pictures
    assert "Review: what the pre-annotations saved" in browser.find_element("tag name", "body").text
    assert _screenshot_is_not_blank(browser.get_screenshot_as_png())


# ---------------------------------------------------------------- Label Studio in the browser
def _log_in(browser: Any, label_studio: LabelStudioServer) -> None:
    """Log in through Label Studio's login form as the session user (a no-op when the browser already is)."""
    from selenium.webdriver.common.by import By

    browser.get(f"{label_studio.url}/user/login/")
    _wait_for(
        lambda: "/user/login" not in browser.current_url or browser.find_elements(By.NAME, "email"),
        "the login form, or the redirect of a logged-in browser",
    )
    if "/user/login" not in browser.current_url:
        return
    browser.find_element(By.NAME, "email").send_keys(label_studio.username)
    browser.find_element(By.NAME, "password").send_keys(label_studio.password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait_for(lambda: "/user/login" not in browser.current_url, "the login to go through")


def _browser_project(
    client: LabelStudioClient, label_studio: LabelStudioServer, backend: BackendServer, config_name: str
) -> DemoProject:
    """A project with `label_config/<config_name>`, the demo samples as tasks and our backend connected."""
    label_config = (REPO_ROOT / "label_config" / config_name).read_text(encoding="utf-8")
    return set_up_project(client, label_config, label_studio.document_root, backend.url, f"browser {config_name}")


def _open_task(browser: Any, label_studio: LabelStudioServer, project_id: int, task_id: int) -> None:
    """Open a task in the editor and wait until the editor's store holds its annotation."""
    browser.get(f"{label_studio.url}/projects/{project_id}/data?task={task_id}")
    _wait_for(
        lambda: browser.execute_script("return !!(window.Htx && window.Htx.annotationStore.selected)"),
        f"the editor of task {task_id}",
    )


def _switch_on(browser: Any, test_id: str, what: str) -> None:
    """Switch on the editor's toggle with data-testid `test_id` (clicking its label, as a person does)."""
    script = (
        "const toggle = document.querySelector(`[data-testid='${arguments[0]}']`);"
        "if (!toggle) return false; if (!toggle.checked) toggle.closest('label').click(); return toggle.checked;"
    )
    _wait_for(lambda: browser.execute_script(script, test_id), f"{what} to be switched on")


#: The editor's regions: [type, origin ('prediction', 'manual', …), label text].
_EDITOR_REGIONS = (
    "return window.Htx.annotationStore.selected.regions.map(r => [r.type, r.origin || '', "
    "(r.labeling && r.labeling.selectedLabels ? r.labeling.selectedLabels.map(l => l.value).join(',') : '')])"
)


#: The editor's state around a suggestion: [brush regions, pending suggestions, Auto-Annotation on, Auto-Accept on].
_SUGGESTION_STATE = (
    "const annotation = window.Htx.annotationStore.selected;"
    "const toggle = id => { const t = document.querySelector(`[data-testid='${id}']`); return t ? t.checked : null; };"
    "return [annotation.regions.filter(r => r.type === 'brushregion').length,"
    " annotation.suggestions ? annotation.suggestions.size : 0,"
    " toggle('bottombar-auto-annotation-toggle'), toggle('bottombar-auto-accept-toggle')];"
)


def _image_rgb(path: Path) -> np.ndarray:
    """An image file as a uint8 (H, W, 3) array."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.labelstudio
def test_interactive_prompt_with_auto_annotation_gives_the_colour_rule_mask_in_the_editor(
    browser: Any, client: LabelStudioClient, label_studio: LabelStudioServer, backend: BackendServer
) -> None:
    from selenium.webdriver.common.by import By

    project = _browser_project(client, label_studio, backend, "interactive.xml")
    # A task whose image another task names differently: the typed expression is not the task's own.
    (task_id, sample), other = next(
        ((task_id, sample), other)
        for task_id, sample in zip(project.task_ids, project.samples)
        for other in project.samples
        if other.image_name == sample.image_name and other.expression != sample.expression
    )
    rgb = _image_rgb(label_studio.document_root / SAMPLES_FOLDER / sample.image_name)
    expected = colour_rule_mask(rgb, other.expression)
    assert expected is not None and not np.array_equal(expected, colour_rule_mask(rgb, sample.expression))
    _log_in(browser, label_studio)

    _open_task(browser, label_studio, project.project_id, task_id)
    _switch_on(browser, "bottombar-auto-annotation-toggle", "Auto-Annotation")
    _switch_on(browser, "bottombar-auto-accept-toggle", "Auto-Accept Suggestions")
    brushes_before = browser.execute_script(_SUGGESTION_STATE)[0]
    prompt = _wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "textarea[data-testid='textarea-input']"), "the prompt box")
    prompt.send_keys(other.expression)
    browser.find_element(By.CSS_SELECTOR, "[data-testid='textarea-add-button']").click()
    # Auto-Accept makes the suggestion a region at once; a suggestion still pending is accepted by hand.
    state = _wait_for(
        lambda: (lambda s: s if s[0] > brushes_before or s[1] else None)(browser.execute_script(_SUGGESTION_STATE)),
        lambda: f"the backend's suggestion in the editor (editor state {browser.execute_script(_SUGGESTION_STATE)})",
        timeout_s=2 * WAIT_S,
    )
    if state[0] <= brushes_before:
        browser.find_element(By.CSS_SELECTOR, "[data-testid='bottombar-accept-suggestions-button']").click()
    _wait_for(
        lambda: browser.execute_script(_SUGGESTION_STATE)[0] > brushes_before,
        lambda: f"the suggested mask to become a brush region (editor state {browser.execute_script(_SUGGESTION_STATE)})",
    )
    browser.find_element(By.CSS_SELECTOR, "[data-testid='bottombar-submit-button']").click()
    annotations = _wait_for(
        lambda: client.annotations(task_id), "the submitted annotation in Label Studio"
    )

    (annotation,) = annotations
    height, width = rgb.shape[:2]
    brush_masks = [
        mask_from_regions([region], None, height, width) for region in annotation["result"] if region["type"] == "brushlabels"
    ]
    assert any(np.array_equal(mask, expected) for mask in brush_masks), f"no brush region equals the rule for {other.expression!r}"
    texts = [region["value"]["text"] for region in annotation["result"] if region["type"] == "textarea"]
    assert texts == [[other.expression]]


@pytest.mark.labelstudio
def test_expressions_project_shows_the_pre_annotation_and_retrieves_predictions_from_the_data_manager(
    browser: Any, client: LabelStudioClient, label_studio: LabelStudioServer, backend: BackendServer
) -> None:
    from selenium.webdriver.common.by import By

    project = _browser_project(client, label_studio, backend, "expressions.xml")
    assert client.predictions(project.project_id) == []
    _log_in(browser, label_studio)

    # Opening a task without a prediction makes Label Studio ask the backend: a region is listed.
    _open_task(browser, label_studio, project.project_id, project.task_ids[0])
    regions = _wait_for(lambda: browser.execute_script(_EDITOR_REGIONS), "the pre-annotation's region in the editor")
    assert [(kind, label) for kind, _, label in regions] == [("brushregion", "object")], regions
    _wait_for(lambda: "object" in browser.find_element(By.CSS_SELECTOR, ".lsf-outliner").text, "the region list")
    assert {prediction["task"] for prediction in client.predictions(project.project_id)} == {project.task_ids[0]}

    browser.get(f"{label_studio.url}/projects/{project.project_id}/data")
    _wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "input[aria-label='Select all rows']"), "the task table").click()
    browser.find_element(By.CSS_SELECTOR, "button[aria-label='Tasks Actions']").click()
    _wait_for(
        lambda: browser.find_element(By.XPATH, "//*[normalize-space(text())='Retrieve Predictions']"), "the actions menu"
    ).click()
    _wait_for(lambda: browser.find_element(By.XPATH, "//button[normalize-space(.)='OK']"), "the confirmation").click()

    _wait_for(
        lambda: {prediction["task"] for prediction in client.predictions(project.project_id)} == set(project.task_ids),
        "a prediction of every task",
    )
    footer = f"Predictions: {len(client.predictions(project.project_id))}"
    _wait_for(lambda: footer in browser.find_element(By.TAG_NAME, "body").text, f"the data manager to show {footer!r}")
