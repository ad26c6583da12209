"""The pages people look at, in a real browser: Debian's headless Chromium driven by Playwright for Python
(scripts/test.sh installs both). A job is submitted from the task page's form, followed on its page while
it trains, and downloaded at the end; the same page is read without JavaScript and on a phone-width screen.

Set GEOTRAIN_SCREENSHOTS to a folder to keep the screenshots there (docs/screenshots/ was made that way)."""

from __future__ import annotations

import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.conftest import TASK, Server
from tests.exports import ExportSpec, write_classified_tiles

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("GEOTRAIN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
EPOCHS = 4


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: scripts/test.sh installs Debian's chromium (or set GEOTRAIN_CHROMIUM)")
    with sync_playwright() as p:
        # Playwright adds --no-sandbox (we run as root in CI) and turns off background networking, which this
        # machine's closed network would refuse
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu", "--disable-quic"])
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("GEOTRAIN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _screenshot(page: Page, path: Path, full_page: bool = True) -> None:
    page.screenshot(path=str(path), full_page=full_page)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_a_job_submitted_from_the_task_form_shows_its_chart_growing_while_it_trains_and_ends_with_a_download(
    server: Server, browser: Browser, store_root: Path, shots: Path, tmp_path: Path
) -> None:
    # enough chips that an epoch takes most of a second on 2 cores: the page polls every second
    write_classified_tiles(store_root / "browser", ExportSpec(chips=24, size=64, bands=3, dtype="uint8", seed=3))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(f"{server.url}{TASK}")
    assert page.title() == "Train Deep Learning Model (Task)"
    _screenshot(page, shots / "task-page.png", full_page=False)  # its form; the JSON below it runs long

    page.fill("input[name=in_folder]", "/fileShares/chips/browser")
    page.fill("input[name=output_name]", "browser_unet")
    page.select_option("select[name=model_type]", "UNET")
    page.select_option("select[name=backbone_model]", "RESNET18")
    page.fill("input[name=batch_size]", "8")
    page.fill("input[name=max_epochs]", str(EPOCHS))
    page.fill("input[name=learning_rate]", "0.001")
    page.fill("input[name=chip_size]", "64")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert re.search(r"/jobs/j[0-9a-f]+\?f=html$", page.url), page.url
    job_url = page.url.split("?")[0]

    # the live part: points join the chart while the job runs, without the page being loaded again
    page.evaluate("window.sameLoad = true")
    seen: list[int] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if not page.evaluate("window.sameLoad === true"):
                break  # the script reloads the page when the job ends
            points = page.locator("#chart circle.point.train_loss").count()
        except PlaywrightError:  # the reload may land between the two calls
            break
        if not seen or points != seen[-1]:
            seen.append(points)
        time.sleep(0.1)
    growing = [n for n in seen if 0 < n < EPOCHS]
    assert len(set(growing)) >= 2 or (growing and seen[0] == 0), f"points seen while training: {seen}"
    page.wait_for_selector("#download", timeout=60_000)
    assert page.text_content("#status") == "esriJobSucceeded"
    assert page.locator("#chart circle.point.train_loss").count() == EPOCHS
    assert page.locator("#chart circle.point.valid_loss").count() == EPOCHS
    # the package's pictures are shown, decoded by the browser
    widths = page.eval_on_selector_all("img.picture", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
    assert len(widths) == 2 and all(w and w > 100 for w in widths), widths
    _screenshot(page, shots / "job-page.png")

    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.suffix == ".dlpk"
    with zipfile.ZipFile(saved) as package:
        assert any(name.endswith(".emd") for name in package.namelist())

    # the jobs list links to the job with its status and model type
    page.goto(f"{server.url}{TASK}/jobs")
    row = page.locator("#jobs tr", has=page.locator(f"a[href*='{job_url.rsplit('/', 1)[-1]}']"))
    assert "esriJobSucceeded" in row.inner_text() and "UNET" in row.inner_text()

    # without JavaScript: the same page reads whole (status, chart, messages, download)
    still = browser.new_context(java_script_enabled=False).new_page()
    still.goto(f"{job_url}?f=html")
    assert still.text_content("#status") == "esriJobSucceeded"
    assert still.locator("#chart circle.point.valid_loss").count() == EPOCHS
    assert still.locator("#messages tr").count() > 3 and still.locator("#download").count() == 1

    # a phone-width screen: nothing wider than the screen but the tables and chart, which scroll or shrink
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True).new_page()
    phone.goto(f"{job_url}?f=html")
    wide = phone.evaluate(
        "[...document.body.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > 391)"
        ".filter(e => !e.closest('table, pre')).map(e => e.tagName + ' ' + e.textContent.slice(0, 40))"
    )
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390, wide
    chart = phone.locator("#chart svg").bounding_box()
    assert chart is not None and chart["width"] <= 390
    _screenshot(phone, shots / "job-page-phone.png")
