"""The browser UI in a real Chromium (Debian's, driven by Playwright), against
`sightline serve` running on an index built by `sightline index`.

Skipped only when /usr/bin/chromium is missing outside CI; under CI (CI=true)
a missing browser is a failure.  Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from sightline.search.store import Store
from tests.web.support import PHOTOS
from tests.web.server_process import REPO, running_server

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
UI_PAGE = 30  # results per page in app.js
TOKEN = "browser-test-token"


def _require_browser():
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is not installed (apt-get install chromium; see web/tests_support/install_browser.sh)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright Python package is not installed"
    if problem and os.environ.get("CI") == "true":
        pytest.fail(f"browser test cannot run under CI: {problem}")
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def server(built_index, tmp_path_factory):
    _require_browser()
    tmp = tmp_path_factory.mktemp("browser-server")
    with running_server(built_index, tmp / "server.log", "--thumbnail-dir", str(tmp / "thumbs")) as base:
        yield base


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory):
    _require_browser()
    tmp = tmp_path_factory.mktemp("empty-server")
    Store.open(tmp / "index", create=True).close()
    with running_server(tmp / "index", tmp / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    _require_browser()
    tmp = tmp_path_factory.mktemp("token-server")
    Store.open(tmp / "index", create=True).close()
    with running_server(tmp / "index", tmp / "server.log", token=TOKEN) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Content Security Policy" in msg.text else None)
    yield page
    context.close()
    assert not problems, problems  # no script errors, no CSP violations


def goto(page, url: str) -> None:
    """Open the page and wait until its script has started (keyboard handlers bound)."""
    page.goto(url)
    page.wait_for_selector("body[data-ready]", state="attached")


def cards(page):
    return page.locator("#results .card")


def wait_until(page, expression: str, arg=None, timeout: float = 20.0) -> None:
    """Poll a JS expression from the test side.

    (Playwright's wait_for_function evaluates its predicate with eval() inside
    the page, which the page's own CSP rightly forbids.)
    """
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {expression}")
        time.sleep(0.1)


def wait_thumbnails_loaded(page, count: int) -> None:
    wait_until(page, """n => { const imgs = [...document.querySelectorAll('#results .card img')].slice(0, n);
                          return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }""", count)


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=False)


def test_text_query_shows_thumbnails_and_loads_more(page, server):
    goto(page, server)
    page.wait_for_selector("#index-status:has-text('photos')")
    assert f"{PHOTOS} photos" in page.text_content("#index-status")
    page.fill("#q", "a red square")
    page.press("#q", "Enter")
    page.wait_for_selector("#results .card")
    wait_thumbnails_loaded(page, 6)
    assert "q=a+red+square" in page.url
    assert re.fullmatch(r"\d\.\d{3}", cards(page).first.locator(".score").text_content())
    screenshot(page, "web-results.png")
    # More results arrive on scroll (or with the "Load more" button).
    page.mouse.wheel(0, 5000)
    wait_until(page, f"document.querySelectorAll('#results .card').length === {PHOTOS}")
    assert page.is_hidden("#more")
    assert page.is_hidden("#error")


def test_image_upload_shows_similar_photos_and_captions(page, server, photo_dir):
    goto(page, server)
    page.set_input_files("#file-input", str(photo_dir / "photo_0005.jpg"))
    page.wait_for_selector("#results .card")
    page.wait_for_selector("#captions li")
    assert cards(page).first.locator(".name").text_content() == "photo_0005.jpg"
    assert page.is_visible("#query-aside") and page.is_visible("#query-image")
    assert page.locator("#captions li").count() >= 3
    wait_thumbnails_loaded(page, 4)
    screenshot(page, "web-image-query.png")


def test_drop_an_image_onto_the_page(page, server, photo_dir):
    goto(page, server)
    data = list((photo_dir / "photo_0007.jpg").read_bytes())
    page.evaluate("""bytes => {
        const file = new File([new Uint8Array(bytes)], 'dropped.jpg', {type: 'image/jpeg'});
        const dt = new DataTransfer(); dt.items.add(file);
        document.dispatchEvent(new DragEvent('dragenter', {dataTransfer: dt, bubbles: true}));
        document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", data)
    page.wait_for_selector("#results .card")
    assert cards(page).first.locator(".name").text_content() == "photo_0007.jpg"
    assert page.is_hidden("#drop-overlay")


def test_detail_view_and_more_like_this(page, server, photo_dir):
    goto(page, server + "/?q=green+field")
    first = cards(page).first
    first.wait_for()
    name = first.locator(".name").text_content()
    image_id = first.get_attribute("data-id")
    first.click()
    page.wait_for_selector("#detail[open]")
    page.wait_for_selector(f"#detail-path:has-text('{name}')")
    assert str(photo_dir) in page.text_content("#detail-path")
    assert "Dimensions" in page.text_content("#detail-meta")
    wait_until(page, "document.getElementById('detail-img').naturalWidth > 0")
    assert f"view={image_id}" in page.url
    screenshot(page, "web-detail.png")
    page.click("#more-like-this")
    page.wait_for_selector("#detail:not([open])", state="attached")
    page.wait_for_url(re.compile(rf"similar={image_id}"))
    wait_until(page, f"document.querySelectorAll('#results .card').length >= {UI_PAGE}")
    assert image_id not in cards(page).evaluate_all("els => els.map(e => e.dataset.id)")
    page.wait_for_selector("#captions li")
    assert "similar to photo" in page.text_content("#results-heading")
    page.go_back()  # back to the photo that was open
    page.wait_for_selector("#detail[open]")


def test_keyboard_only(page, server):
    goto(page, server)
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("a blue sky")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .card")
    cards(page).first.focus()
    page.keyboard.press("ArrowRight")
    second = cards(page).nth(1).get_attribute("data-id")
    assert page.evaluate("document.activeElement.dataset.id") == second
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail[open]")
    page.keyboard.press("ArrowRight")  # next result inside the detail view
    third = cards(page).nth(2).get_attribute("data-id")
    page.wait_for_url(re.compile(rf"view={third}"))
    page.keyboard.press("Escape")
    page.wait_for_selector("#detail:not([open])", state="attached")
    page.wait_for_url(lambda url: "view=" not in url)  # closing goes back in history (async)
    assert page.evaluate("document.activeElement.dataset.id") == third  # focus returns to the photo


def test_bookmarked_urls(page, server):
    goto(page, server + "/?q=an+orange")
    page.wait_for_selector("#results .card")
    assert page.input_value("#q") == "an orange"
    image_id = cards(page).nth(3).get_attribute("data-id")
    goto(page, server + f"/?q=an+orange&view={image_id}")
    page.wait_for_selector("#detail[open]")
    goto(page, server + f"/?similar={image_id}")
    page.wait_for_selector("#results .card")
    assert page.is_visible("#query-aside")


def test_no_results_and_api_errors_are_shown(page, server):
    goto(page, server + "/?q=anything&min=0.99")
    page.wait_for_selector("#message:not([hidden])")
    assert "No photos matched" in page.text_content("#message")
    goto(page, server + "/?similar=987654")
    page.wait_for_selector("#error:not([hidden])")
    assert "no image with id 987654" in page.text_content("#error")
    page.click("#error-dismiss")
    assert page.is_hidden("#error")
    page.set_input_files("#file-input", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                               "buffer": b"not an image"}])
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.text_content("#error")
    page.set_input_files("#file-input", files=[{"name": "fake.jpg", "mimeType": "image/jpeg",
                                               "buffer": b"garbage bytes"}])
    page.wait_for_selector("#error:has-text('400')")
    assert "not a recognised image format" in page.text_content("#error")


def test_empty_index_is_explained(page, empty_server):
    goto(page, empty_server)
    page.wait_for_selector("#message:has-text('no photos yet')")
    assert "sightline index" in page.text_content("#message")
    page.fill("#q", "cats")
    page.press("#q", "Enter")
    page.wait_for_url(re.compile(r"q=cats"))
    page.wait_for_selector("#message:has-text('no photos yet')")
    assert cards(page).count() == 0 and page.is_hidden("#error")


def test_token_login(page, token_server):
    goto(page, token_server)
    page.wait_for_selector("#login[open]")
    page.fill("#login-token", "wrong-token-value")
    page.press("#login-token", "Enter")
    page.wait_for_selector("#login-error:has-text('wrong access token')")
    page.fill("#login-token", TOKEN)
    page.press("#login-token", "Enter")
    page.wait_for_selector("#login:not([open])", state="attached")
    page.wait_for_selector("#message:has-text('no photos yet')")  # the status call went through
    assert page.is_hidden("#error")
    cookies = page.context.cookies()
    assert any(c["name"] == "sightline_token" and c["httpOnly"] for c in cookies)
