"""The web UI in a real browser: Debian's Chromium driven by Playwright, against a live `run_platform` (web
server and a real Celery worker with the tiny model trained on real photos).

A person's path: sign in → drop three real photos → their captions appear without a reload → search finds
one by a word of its caption → the attention view paints a heatmap for a word → editing the caption shows
the human caption; then a zip batch, the token and guide pages, a phone-sized screen and text contrast.

Every page is saved as a screenshot: into a temporary folder, or with IMGCAP_SCREENSHOTS=DIR into DIR
using the shipped model (`make screenshots` refreshes docs/screenshots/ that way).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.platform_harness import CAPTION_TIMEOUT_S, FLICKR_IMAGES, REPO, Platform

expect = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt").expect

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download cannot work offline: Debian's Chromium, headless, talking to no one.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "browser-test-pass-8311"
SCREENSHOTS = os.environ.get("IMGCAP_SCREENSHOTS")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WAIT_MS = CAPTION_TIMEOUT_S * 1000

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (`make install` adds it)"
    ),
    pytest.mark.e2e,
]


def photos(start: int, count: int) -> list[Path]:
    found = sorted(FLICKR_IMAGES.glob("*.jpg"))[start : start + count]
    if len(found) < count:
        pytest.skip(f"real photos not found in {FLICKR_IMAGES}")
    return found


@pytest.fixture(scope="module")
def platform(tmp_path_factory, request) -> Iterator[Platform]:
    # Screenshots for the README show the shipped model's captions; the test itself needs only the tiny one.
    model = REPO / "models" / "default" if SCREENSHOTS else request.getfixturevalue("tiny_run")
    var_dir = tmp_path_factory.mktemp("browser") / "var"
    live = Platform(var_dir, model, "browser", env_vars={"IMGCAP_ADMIN_PASSWORD": PASSWORD})
    yield live
    live.cleanup()


@pytest.fixture(scope="module")
def chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def context(chromium, platform):
    """One desktop browser context for the module: the sign-in of the first test carries over."""
    context = chromium.new_context(viewport=DESKTOP, base_url=platform.url)
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture(scope="module")
def page(context):
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # The site's Content-Security-Policy is enforced: anything of ours it blocks fails the module.
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.js_errors = errors
    yield page
    assert not errors, f"JavaScript errors: {errors}"


def csrf_token(page) -> str:
    """For API calls made with the page's session (page.request shares its cookies)."""
    return next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")


def drop_files(page, selector: str, files: list[tuple[str, bytes, str]]) -> None:
    """Drop files on an element the way a person drags them from their file manager."""
    payload = [{"name": n, "type": t, "data": base64.b64encode(d).decode()} for n, d, t in files]
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], f.name, {type: f.type}));
            }
            return transfer;
        }""",
        payload,
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def shot(page, folder: Path, name: str) -> None:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True, scale="css")


def painted_pixels(page) -> int:
    """How many pixels of the heatmap canvas have any colour."""
    return page.evaluate(
        """() => {
            const canvas = document.getElementById("heatmap");
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let count = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) count++;
            return count;
        }"""
    )


# WCAG contrast of every visible text against the first opaque background behind it.
LOW_CONTRAST_JS = """() => {
    const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
        const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
        for (; el; el = el.parentElement) {
            const c = rgb(getComputedStyle(el).backgroundColor);
            if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3);
        }
        return [255, 255, 255];
    };
    const bad = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
        const el = walker.currentNode.parentElement;
        if (!walker.currentNode.textContent.trim() || !el.offsetParent) continue;
        const style = getComputedStyle(el);
        if (style.visibility === "hidden" || el.closest(".visually-hidden, .skip, [disabled]")) continue;
        const a = lum(rgb(style.color)), b = lum(background(el));
        const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
        const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
        const text = walker.currentNode.textContent.trim().slice(0, 30);
        if (ratio < needed) bad.push(`${el.tagName}.${el.className} "${text}" ${ratio.toFixed(2)}`);
    }
    return bad;
}"""


def test_sign_in_drop_photos_see_captions_search_attention_and_edit(page, platform, shots):
    page.goto("/accounts/login/")
    shot(page, shots, "login")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(platform.url + "/")

    # Drop three real photos and one file that is not an image.
    page.goto("/upload/")
    page.evaluate("window.sameDocument = true")
    api_reads: list[str] = []

    def record_api_read(request) -> None:
        if request.method == "GET" and "/api/" in request.url:
            api_reads.append(request.url)

    page.on("request", record_api_read)
    three = photos(0, 3)
    files = [(p.name, p.read_bytes(), "image/jpeg") for p in three]
    drop_files(page, "#dropzone", [*files, ("notes.jpg", b"just some text, not a photo", "image/jpeg")])
    assert page.locator(".upload-row").count() == 4  # a row per file at once, each with its own progress
    rejected = page.locator('.upload-row[data-status="rejected"]')
    rejected.wait_for()
    assert "notes.jpg: this is not an image we can read" in rejected.inner_text()
    page.wait_for_function(
        "() => document.querySelectorAll('.upload-row[data-status=\"done\"] .caption a').length === 3",
        timeout=WAIT_MS,
    )
    assert page.evaluate("window.sameDocument") is True  # the captions came without a reload
    # All uploads are followed together, a request a round (not one per image), so a thousand cost the same.
    assert api_reads and all(re.search(r"/api/v1/images/\?.*ids=", url) for url in api_reads), api_reads
    page.remove_listener("request", record_api_read)
    rows = page.locator('.upload-row[data-status="done"]')
    image_ids = {
        rows.nth(i).locator(".caption a").inner_text(): rows.nth(i).get_attribute("data-image")
        for i in range(3)
    }
    captions = list(image_ids)
    assert len(captions) == 3 and all(text.strip() for text in captions)
    expect(page.locator("#upload-summary")).to_have_text("3 uploaded · 3 captioned · 1 not accepted")
    # The drop is one batch: its three photos, and the refused file with its reason.
    batch_url = page.locator(".batch-link a").get_attribute("href")
    batch = page.request.get(batch_url.replace("/batches/", "/api/v1/batches/")).json()
    assert sorted(item["id"] for item in batch["items"]) == sorted(int(i) for i in image_ids.values())
    assert [(r["name"], r["code"]) for r in batch["rejected"]] == [("notes.jpg", "not_an_image")]
    shot(page, shots, "upload")

    # The gallery: newest first, right-sized thumbnails, the caption as alt text.
    page.goto("/")
    cards = page.locator(".card")
    assert cards.count() == 3
    for i in range(3):
        card = cards.nth(i)
        text = card.locator(".caption a").inner_text()
        assert text in captions and card.locator("img").get_attribute("alt") == text
    page.wait_for_load_state("networkidle")
    widths = page.eval_on_selector_all(".card img", "images => images.map(i => i.naturalWidth)")
    assert all(0 < w <= 640 for w in widths), widths
    shot(page, shots, "gallery")

    # Search as you type: ranked hits with the word marked, no page load.
    target = captions[0]
    word = max(re.findall(r"[a-z]+", target.lower()), key=len)
    page.goto("/search/")
    assert page.locator("#search-empty").is_visible()
    page.evaluate("window.sameDocument = true")
    page.locator("#q").press_sequentially("zzqxv", delay=20)
    page.get_by_text("No photo matches “zzqxv”").wait_for()
    page.fill("#q", "")
    page.locator("#q").press_sequentially(word, delay=40)
    page.locator("#results mark").first.wait_for()
    assert page.evaluate("window.sameDocument") is True
    assert word in page.url and word in page.locator("#results mark").first.inner_text().lower()
    hit = page.locator(f'#results .snippet a[href$="/images/{image_ids[target]}/"]')
    assert hit.count() == 1
    shot(page, shots, "search")

    # The image page: hover a word, the heatmap is painted over the photo.
    hit.click()
    page.wait_for_url(re.compile(r"/images/\d+/$"))
    words = page.locator("#words button")
    words.first.wait_for()
    assert painted_pixels(page) == 0
    second = words.nth(1)
    second.hover()
    assert second.get_attribute("aria-pressed") == "true"
    assert page.locator("#attention").get_attribute("data-word") == second.inner_text()
    assert painted_pixels(page) > 1000
    shot(page, shots, "image")

    # A colour scale says what the colours mean: the same ramp, painted low to high.
    expect(page.locator("#heat-legend")).to_be_visible()
    ramp = page.evaluate(
        """() => {
            const c = document.getElementById("heat-scale"), d = c.getContext("2d");
            return [0, c.width - 1].map((x) => Array.from(d.getImageData(x, 5, 1, 1).data));
        }"""
    )
    assert sum(ramp[0][:3]) < 60 and sum(ramp[1][:3]) > 600, ramp  # dark at "least", bright at "most"

    # By keyboard: the sentence is one Tab stop (a roving tabindex); arrows, Home and End move along it
    # and show each word's attention; Escape clears.
    count = words.count()
    page.mouse.move(0, 0)  # a word under the pointer would show itself as the layout moves
    assert page.eval_on_selector_all("#words button", "bs => bs.map(b => b.tabIndex)").count(0) == 1
    words.first.focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.textContent") == second.inner_text()
    assert page.locator("#attention").get_attribute("data-word") == second.inner_text()
    assert [words.nth(i).get_attribute("tabindex") for i in range(count)] == [
        "0" if i == 1 else "-1" for i in range(count)
    ]
    page.keyboard.press("End")
    assert page.locator("#attention").get_attribute("data-word") == words.nth(count - 1).inner_text()
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Tab")  # leaves the sentence at once, not at its next word
    assert page.evaluate("document.activeElement.closest('#words') === null")
    page.keyboard.press("Shift+Tab")  # and comes back to the word it left
    assert page.evaluate("document.activeElement.textContent") == second.inner_text()
    page.keyboard.press("Escape")
    assert painted_pixels(page) == 0

    # Play steps through the sentence on its own.
    page.mouse.move(0, 0)
    page.click("#play")
    page.wait_for_function("() => document.querySelector('#attention').dataset.word !== undefined")
    first_word = page.locator("#attention").get_attribute("data-word")
    if words.count() > 1:
        page.wait_for_function(
            f"() => document.querySelector('#attention').dataset.word !== {json.dumps(first_word)}"
        )
    page.click("#play")  # stop
    assert page.locator("#play").get_attribute("aria-pressed") == "false"

    # Edit the caption: the human caption is shown, the model's is kept beside it.
    model_caption = page.locator("h1").inner_text()
    page.fill("#id_caption", "my own words about this photo")
    page.click("text=Save caption")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "My own words about this photo."  # shown as a sentence
    assert page.locator(".source-human").first.is_visible()
    assert model_caption in page.locator("#model-caption").inner_text()
    assert "Caption saved." in page.locator(".messages").inner_text()


def test_a_zip_batch_shows_its_progress_failures_and_exports(page, platform, shots):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in photos(3, 2):
            zf.writestr(path.name, path.read_bytes())
        zf.writestr("readme.txt", "these are holiday photos")
    page.goto("/upload/")
    page.set_input_files(
        "#id_archive",
        files=[{"name": "holiday.zip", "mimeType": "application/zip", "buffer": archive.getvalue()}],
    )
    page.click("main button[type=submit]")
    page.locator("#uploads a", has_text="batch #").click()
    page.wait_for_url(re.compile(r"/batches/\d+/$"))
    page.locator("#batch-status", has_text="done").wait_for(timeout=WAIT_MS)
    assert page.locator("#batch-finished").inner_text() == "2"
    # Each finished row fetches its caption after the counts arrive: wait for both.
    captioned = page.locator('.batch-items tr[data-status="done"] .caption-cell a')
    expect(captioned).to_have_count(2, timeout=WAIT_MS)
    assert "readme.txt" in page.locator("#rejected-title + ul").inner_text()
    batch_id = re.search(r"/batches/(\d+)/", page.url).group(1)
    csv_link = page.get_by_role("link", name="Export CSV")
    assert csv_link.get_attribute("href") == f"/api/v1/export.csv?batch={batch_id}"
    with page.expect_download() as download:
        csv_link.click()
    rows = Path(download.value.path()).read_text().splitlines()
    assert rows[0].startswith("image_url,") and len(rows) >= 3  # a header, and captions of both images
    shot(page, shots, "batch")

    # Named, then deleted with its photos kept.
    page.locator("summary", has_text="Rename or delete").click()
    page.fill("#batch-name", "Holiday zip")
    page.get_by_role("button", name="Rename").click()
    expect(page.locator("h1")).to_contain_text("Holiday zip")
    page.locator("summary", has_text="Rename or delete").click()
    page.get_by_role("link", name="Delete this batch…").click()
    page.get_by_role("button", name="Delete the batch, keep its photos").click()
    page.wait_for_url(re.compile(r"/batches/$"))
    expect(page.locator(".messages")).to_contain_text(
        "Holiday zip deleted; its photos are still in your library"
    )


def test_token_and_api_guide_pages(page, platform, shots):
    page.goto("/account/token/")
    page.click("text=Create a token")
    key = page.locator("#token-key").inner_text().strip()
    request = urllib.request.Request(
        platform.url + "/api/v1/images/", headers={"Authorization": f"Token {key}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["count"] == 5
    shot(page, shots, "token")

    page.goto("/api-guide/")
    shot(page, shots, "api-guide")
    page.get_by_role("link", name="API documentation").click()
    assert page.url.endswith("/api/v1/docs/")
    # Swagger UI (served from this server) renders the schema: the upload endpoint is listed.
    page.locator(".opblock-post").filter(has_text="/api/v1/images/").first.wait_for()


def test_a_phone_sized_screen_and_readable_contrast(chromium, context, page, platform, shots):
    phone = chromium.new_context(
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        base_url=platform.url,
        storage_state=context.storage_state(),
    )
    try:
        small = phone.new_page()
        small.goto("/")
        image_path = small.locator(".card .caption a").first.get_attribute("href")
        for path in (
            "/",
            "/upload/",
            image_path,
            "/search/?q=a",
            "/batches/",
            "/account/token/",
            "/api-guide/",
        ):
            small.goto(path)
            width = small.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{path} scrolls sideways on a phone ({width}px)"
        small.goto(image_path)
        caption = small.locator("#caption-panel h1").bounding_box()
        assert caption["y"] + caption["height"] <= PHONE["height"], (
            f"the caption is below the fold: {caption}"
        )
        small.locator("#words button").nth(1).tap()
        assert painted_pixels(small) > 1000
        shot(small, shots, "phone-image")

        # The gallery: its head is short and the filters are folded behind their toggle.
        small.goto("/")
        assert small.locator("#filter-box").evaluate("box => box.open") is False
        first_card = small.locator(".card").first.bounding_box()
        assert first_card["y"] < PHONE["height"] / 3, first_card
        small.locator("#filter-box > summary").tap()
        expect(small.locator("#id_status")).to_be_visible()
        shot(small, shots, "phone-gallery")

        # Upload: who can see them comes first, then one big button to choose photos.
        small.goto("/upload/")
        expect(small.locator("#choose-photos")).to_be_visible()
        expect(small.get_by_text("Drop photos here")).to_be_hidden()
        chooser = small.locator("#dropzone").bounding_box()
        assert small.locator("#visibility-field").bounding_box()["y"] < chooser["y"]
        assert chooser["y"] < PHONE["height"] / 2, chooser

        # A batch's thumbnails keep their 4:3 box (cropped, not squashed) in a narrow table.
        small.goto("/batches/")
        small.locator("main table a").first.click()
        small.locator(".batch-items img").first.wait_for()
        ratios = small.eval_on_selector_all(
            ".batch-items img",
            "images => images.map(i => i.getBoundingClientRect().width / i.getBoundingClientRect().height)",
        )
        assert ratios and all(abs(r - 4 / 3) < 0.05 for r in ratios), ratios
    finally:
        phone.close()

    for path in (
        "/",
        "/upload/",
        image_path,
        "/search/?q=a",
        "/search/",
        "/batches/",
        "/account/token/",
        "/api-guide/",
    ):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert page.evaluate(LOW_CONTRAST_JS) == [], path


def test_markup_in_a_caption_is_shown_as_text_in_live_search(page, platform):
    page.goto("/?show=mine")
    page.locator(".card .caption a").first.click()
    written = '<img src=x onerror="window.injected = 1"> a <b>striped</b> zebra'
    page.fill("#id_caption", written)
    page.click("text=Save caption")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == written + "."

    page.goto("/search/")
    page.locator("#q").press_sequentially("zebra", delay=20)
    page.locator("#results mark").first.wait_for()
    assert page.locator("#results .snippet").first.inner_text() == written
    assert page.locator("#results .snippet img, #results .snippet b").count() == 0
    assert page.evaluate("window.injected") is None


def test_the_gallery_follows_an_image_until_its_caption_arrives(page, platform):
    """The worker is paused (SIGSTOP) while a photo is uploaded, so the gallery surely shows it
    waiting; once the worker goes on, the card gets its caption and alt text without a reload."""
    worker = next(
        pid for pid in platform.children() if b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes()
    )
    os.kill(worker, signal.SIGSTOP)
    try:
        page.goto("/upload/")
        path = photos(6, 1)[0]
        page.set_input_files("#id_images", str(path))
        page.locator('.upload-row[data-status="pending"]').wait_for()
        page.goto("/")
        page.evaluate("window.sameDocument = true")
        card = page.locator(".card").first
        assert card.get_attribute("data-status") == "pending"
        assert "Captioning" in card.locator(".caption").inner_text()
    finally:
        os.kill(worker, signal.SIGCONT)
    expect(card).to_have_attribute("data-status", "done", timeout=WAIT_MS)
    text = card.locator(".caption a").inner_text()
    assert text and "Captioning" not in text and card.locator("img").get_attribute("alt") == text
    assert page.evaluate("window.sameDocument") is True


def test_a_batch_page_shows_files_that_join_the_batch_after_it_was_opened(page, platform):
    """Files of a drop arrive one by one: a batch page opened in between (even one that reads "done")
    keeps looking for a while and shows the late ones."""
    opened = page.request.post(
        "/api/v1/batches/",
        multipart={
            "images": {"name": "first.jpg", "mimeType": "image/jpeg", "buffer": photos(7, 1)[0].read_bytes()}
        },
        headers={"X-CSRFToken": csrf_token(page)},
    )
    assert opened.status == 202, opened.text()
    batch = opened.json()
    page.goto(batch["urls"]["page"])
    page.locator("#batch-status", has_text="done").wait_for(timeout=WAIT_MS)
    assert page.locator(".batch-items tr[data-image]").count() == 1

    late = page.request.post(
        "/api/v1/images/",
        multipart={
            "image": {"name": "late.jpg", "mimeType": "image/jpeg", "buffer": photos(8, 1)[0].read_bytes()},
            "batch": str(batch["id"]),
        },
        headers={"X-CSRFToken": csrf_token(page)},
    )
    assert late.status == 202, late.text()
    expect(page.locator(".batch-items tr[data-image]")).to_have_count(2, timeout=15_000)
    expect(page.locator(".batch-items tr[data-image] .caption-cell a")).to_have_count(2, timeout=WAIT_MS)


def test_words_in_the_url_box_are_one_refusal(page, platform):
    """The URL box takes one URL a line: a line of words is refused once, saying why."""
    page.goto("/upload/")
    page.fill("#id_urls", "not a url")
    page.click("main button[type=submit]")
    rejected = page.locator('.upload-row[data-status="rejected"]')
    rejected.first.wait_for()
    expect(rejected).to_have_count(1)
    assert "not a url: not a URL" in rejected.inner_text()


def test_gallery_filters_apply_as_soon_as_they_change(page, platform):
    page.goto("/")
    expect(page.get_by_role("button", name="Filter", exact=True)).to_have_count(0)  # only without JavaScript
    with page.expect_navigation():
        page.select_option("#id_status", "done")
    assert "status=done" in page.url
    expect(page.locator("#id_status")).to_have_value("done")
    with page.expect_navigation():
        page.check("#id_review")
    assert "review=1" in page.url and "status=done" in page.url
    expect(page.locator("#id_review")).to_be_checked()


def test_the_gallery_shows_new_images_by_itself(page, platform):
    """An image uploaded elsewhere (here through the API) appears on top of an open gallery, and then
    gets its caption, without a reload."""
    page.goto("/")
    page.evaluate("window.sameDocument = true")
    total = int(page.locator("#gallery-total").inner_text().split()[0])
    uploaded = page.request.post(
        "/api/v1/images/",
        multipart={
            "image": {"name": "new.jpg", "mimeType": "image/jpeg", "buffer": photos(9, 1)[0].read_bytes()}
        },
        headers={"X-CSRFToken": csrf_token(page)},
    )
    assert uploaded.status == 202, uploaded.text()
    new_id = str(uploaded.json()["id"])
    card = page.locator(f'.card[data-image="{new_id}"]')
    card.wait_for(timeout=25_000)  # the gallery looks every 10 s
    assert page.locator(".card").first.get_attribute("data-image") == new_id
    expect(page.locator("#gallery-total")).to_have_text(f"{total + 1} images")
    expect(card).to_have_attribute("data-status", "done", timeout=WAIT_MS)
    text = card.locator(".caption a").inner_text()
    assert text.endswith(".") and card.locator("img").get_attribute("alt") == text
    assert page.evaluate("window.sameDocument") is True


def upload_through_api(page, start: int, count: int) -> list[dict]:
    """Photos uploaded with the page's session, waited for until captioned."""
    uploaded = []
    for path in photos(start, count):
        answer = page.request.post(
            "/api/v1/images/",
            multipart={"image": {"name": path.name, "mimeType": "image/jpeg", "buffer": path.read_bytes()}},
            headers={"X-CSRFToken": csrf_token(page)},
        )
        assert answer.status == 202, answer.text()
        uploaded.append(answer.json())
    for image in uploaded:
        waited = page.request.get(f"/api/v1/images/{image['id']}/?wait=30")
        assert waited.json()["status"] == "done"
    return uploaded


def test_select_photos_into_a_new_album_share_it_and_browse_it_full_screen(chromium, page, platform, shots):
    first, second = upload_through_api(page, 10, 2)
    page.goto("/")
    expect(page.locator("#bulk-form")).to_be_hidden()  # the bar comes with a selection
    for image in (first, second):
        page.locator(f'.card[data-image="{image["id"]}"] .select-box input').check()
    expect(page.locator("#bulk-count")).to_have_text("2 selected")
    page.fill("#bulk-new-album", "Browser picks")
    shot(page, shots, "gallery-selection")
    with page.expect_navigation():
        page.get_by_role("button", name="Add to album").click()
    expect(page.locator(".messages")).to_contain_text("2 images put in the album “Browser picks”")

    page.get_by_role("link", name="Albums", exact=True).click()
    page.get_by_role("link", name=re.compile("Browser picks")).click()
    expect(page.locator("#album .muted").first).to_contain_text("2 photos")
    page.get_by_role("button", name="Get a share link").click()
    link = page.locator("#share-url").input_value()
    assert "/shared/" in link
    shot(page, shots, "album")

    # Someone without an account opens the link and browses it full screen.
    stranger = chromium.new_context(viewport=DESKTOP, base_url=platform.url)
    try:
        visitor = stranger.new_page()
        visitor.goto(link)
        expect(visitor.locator(".card")).to_have_count(2)
        visitor.locator(".card .thumb").first.click()
        dialog = visitor.locator("dialog.viewer-dialog")
        expect(dialog).to_be_visible()
        expect(dialog.locator(".viewer-where")).to_have_text("1 of 2")
        expect(dialog.get_by_role("link", name="Details")).to_be_hidden()  # no image page for strangers
        caption = dialog.locator(".viewer-caption").inner_text()
        assert caption and caption == visitor.locator(".card .caption").first.inner_text()
        visitor.keyboard.press("ArrowRight")
        expect(dialog.locator(".viewer-where")).to_have_text("2 of 2")
        expect(dialog.locator(".viewer-next")).to_be_disabled()
        expect(dialog.locator(".viewer-photo")).to_have_js_property("complete", True)
        assert dialog.locator(".viewer-photo").evaluate("img => img.naturalWidth") > 0
        shot(visitor, shots, "viewer")
        visitor.keyboard.press("Escape")
        expect(dialog).to_be_hidden()

        page.get_by_role("button", name="Stop sharing").click()
        assert visitor.goto(link).status == 404
    finally:
        stranger.close()


def test_the_image_page_goes_to_the_newer_and_older_photo_by_arrow_keys(page, platform):
    page.goto("/")
    ids = [page.locator(".card").nth(i).get_attribute("data-image") for i in range(3)]
    page.goto(f"/images/{ids[1]}/")
    page.keyboard.press("ArrowRight")
    page.wait_for_url(f"**/images/{ids[2]}/")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"**/images/{ids[1]}/")
    page.get_by_role("link", name="‹ Newer").click()
    page.wait_for_url(f"**/images/{ids[0]}/")
