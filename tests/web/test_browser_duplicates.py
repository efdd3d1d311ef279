"""The Duplicates view in a real Chromium against `sightline serve` over an index with copies."""

from __future__ import annotations

import re

import pytest

from tests.web.server_process import running_server
from tests.web.test_browser import _require_browser, browser, goto, page, screenshot, wait_until  # noqa: F401

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def dup_server(duplicate_index, tmp_path_factory):
    _require_browser()
    index_dir, _ = duplicate_index
    tmp = tmp_path_factory.mktemp("dup-browser")
    with running_server(index_dir, tmp / "server.log", "--thumbnail-dir", str(tmp / "thumbs")) as base:
        yield base


def groups(page):
    return page.locator("#groups .dup-group")


def test_groups_side_by_side_compare_and_threshold(page, dup_server):  # noqa: F811
    goto(page, dup_server)
    page.click("a.view-link")  # from the search page
    page.wait_for_url("**/duplicates*")
    page.wait_for_selector("#groups .dup-group")
    assert "threshold=0.990" in page.url
    heading = page.text_content("#dup-heading")
    assert "group" in heading and "files" in heading
    family = page.locator(".dup-group:has(.dup-file .name:text-is('photo_0001_small.jpg'))")
    assert family.count() == 1
    names = family.locator(".dup-file .name").all_text_contents()
    assert names[0].endswith("photo_0001.jpg") and names[0].startswith("Best")  # full size first
    assert {"photo_0001_small.jpg", "photo_0001_q60.jpg"} <= {n.removeprefix("Best") for n in names}
    assert "160 × 120" in family.text_content() and re.search(r"similarity [01]\.\d{4}", family.text_content())
    wait_until(page, "[...document.querySelectorAll('.dup-file img')].every(i => i.complete && i.naturalWidth > 0)")
    screenshot(page, "web-duplicates.png")

    family.locator(".dup-file button").nth(1).click()
    page.wait_for_selector("#compare[open]")
    wait_until(page, "[...document.querySelectorAll('#compare img')].every(i => i.complete && i.naturalWidth > 0)")
    assert "Best copy" in page.text_content("#compare-left") and "Dimensions" in page.text_content("#compare-right")
    screenshot(page, "web-duplicates-compare.png")
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("#compare-title:has-text('copy 2')")
    page.keyboard.press("Escape")
    page.wait_for_selector("#compare:not([open])", state="attached")

    before = groups(page).count()
    page.check("#exact-only")  # only the byte-identical copy in the other root is left
    page.wait_for_url("**exact=1**")
    wait_until(page, "document.querySelectorAll('#groups .dup-group').length === 1")
    assert page.text_content("#groups .kind") == "exact"
    page.uncheck("#exact-only")
    wait_until(page, f"document.querySelectorAll('#groups .dup-group').length === {before}")
    page.evaluate("""() => { const s = document.getElementById('threshold'); s.value = '1';
                             s.dispatchEvent(new Event('input', {bubbles: true})); }""")
    page.wait_for_url("**threshold=1.000**")
    expected = page.request.get(dup_server + "/api/duplicates?threshold=1").json()["total_groups"]
    assert 1 <= expected < before
    wait_until(page, f"document.querySelectorAll('#groups .dup-group').length === {expected}")
    assert page.is_hidden("#error")


def test_bookmarked_threshold_and_no_duplicates_message(page, dup_server):  # noqa: F811
    goto(page, dup_server + "/duplicates?threshold=0.5")
    page.wait_for_selector("#groups .dup-group")
    assert page.input_value("#threshold") == "0.8"  # the slider's floor; the query keeps 0.5
    goto(page, dup_server + "/duplicates?threshold=1&exact=1")
    page.wait_for_selector("#groups .dup-group")
    assert page.is_checked("#exact-only")
