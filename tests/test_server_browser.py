"""The web UI at `GET /`, driven in a real browser (Playwright and Debian's headless Chromium) against a
real `wan serve` running the bundled dev models.

One server and one browser serve the whole module (each test gets a fresh page); the API-key test starts
its own server. Nothing leaves loopback: the Hub endpoint is a closed local port, the dev variants come
from the package, and the page loads no external resource.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import isolated_env
from wanserver import WanServer

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install -e '.[test]')")
expect = sync_api.expect
expect.set_options(timeout=15_000)  # a loaded CI machine is slow; a passing check returns at once anyway

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("no chromium binary (Debian: apt-get install chromium; see scripts/install-test-deps.sh)",
                allow_module_level=True)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "test-artifacts" / "web-ui.png"
MODEL, VARIANT = "ti2v-5B", "dev"
JOB_TIMEOUT_MS = 120_000
LOOPBACK_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
"""Every host name but loopback fails to resolve in the browser, so nothing it loads can leave the machine."""
LOCAL_URLS = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:")

# Records, per video card, every value its progress bar shows and the stage line beside it, as they change.
RECORD_PROGRESS = """
() => {
  window.__progress = {};
  window.__stages = {};
  const record = (bar) => {
    if (!bar || bar.dataset.testid !== "progress") return;
    const card = bar.closest("[data-testid=video-card]");
    if (!card) return;
    const id = card.dataset.id;
    (window.__progress[id] ||= []).push(Number(bar.getAttribute("aria-valuenow")));
    const stage = card.querySelector("[data-testid=stage]");
    (window.__stages[id] ||= []).push(stage ? stage.textContent : "");
  };
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      if (m.type === "attributes") record(m.target);
      else for (const node of m.addedNodes) {
        if (node.nodeType === 1) node.querySelectorAll("[data-testid=progress]").forEach(record);
      }
    }
  }).observe(document.body,
             { subtree: true, childList: true, attributes: true, attributeFilter: ["aria-valuenow"] });
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WanServer]:
    """One `wan serve` for the module, with its own empty store and data folder."""
    root = tmp_path_factory.mktemp("browser-server")
    wan = WanServer(isolated_env(root), root / "serve.log").start()
    yield wan
    wan.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", LOOPBACK_ONLY])
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """`open_page(server)`: a fresh page (own storage) on the UI; the test fails if the page threw an
    uncaught error or asked for anything off the machine."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(wan: WanServer, *, before_load: Callable[[Any], None] | None = None) -> Any:
        context = browser.new_context(viewport={"width": 1360, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        # The page must load nothing from outside (and cannot: see LOOPBACK_ONLY).
        page.on("request", lambda req: None if req.url.startswith(LOCAL_URLS) else errors.append(
            f"off-machine request: {req.url}"))
        if before_load:
            before_load(page)
        page.goto(wan.base_url + "/")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, errors


def choose(page: Any, model: str = MODEL, variant: str = VARIANT) -> None:
    """Pick a model by name (whatever its version) and one of its variants."""
    expect(page.locator("#model option")).not_to_have_count(0)
    values = page.locator("#model option").evaluate_all("options => options.map(o => o.value)")
    page.select_option("#model", next(v for v in values if v.split("@")[0] == model))
    page.check(f"#variant-{variant}")
    expect(page.locator(f"[data-testid=variant-{variant}]")).to_have_class("variant-row selected")


def submit(page: Any, prompt: str, **fields: str) -> Any:
    """Fill the form (ids of its inputs -> values) and submit; returns the locator of the new video card."""
    page.fill("#prompt", prompt)
    for field, value in fields.items():
        page.fill(f"#{field}", value)
    page.click("#submit")
    card = page.locator("[data-testid=video-card]", has_text=prompt)
    expect(card).to_have_count(1)
    return card


def api_job(server: WanServer, prompt: str, **fields: Any) -> str:
    status, video, _ = server.request("POST", "/v1/videos",
                                      {"model": MODEL, "variant": VARIANT, "prompt": prompt, **fields})
    assert status == 200, video
    return str(video["id"])


def test_form_adapts_to_the_model_and_variant(server: WanServer, open_page: Callable[..., Any]) -> None:
    page = open_page(server)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    choose(page, MODEL, VARIANT)
    models = {m["name"]: m for m in server.request("GET", "/v1/models")[1]["data"]}
    model = models[MODEL]
    defaults = next(v for v in model["variants"] if v["name"] == VARIANT)["defaults"]
    limits = model["engine"]["limits"]

    # the variant's defaults, prefilled
    expect(page.locator("#width")).to_have_value(str(defaults["width"]))
    expect(page.locator("#height")).to_have_value(str(defaults["height"]))
    expect(page.locator("#num_frames")).to_have_value(str(defaults["num_frames"]))
    expect(page.locator("#steps")).to_have_value(str(defaults["steps"]))
    expect(page.locator("#fps")).to_have_value(str(defaults["fps"]))
    assert float(page.input_value("#guidance_scale")) == defaults["guidance_scale"]
    expect(page.locator("#negative_prompt")).to_have_value(defaults["negative_prompt"])
    expect(page.locator("#seed")).to_have_value("")
    # the model's limits on the inputs: frames on the 4n+1 grid
    frames = page.locator("#num_frames")
    expect(frames).to_have_attribute("min", str(limits["min_frames"]))
    expect(frames).to_have_attribute("max", str(limits["max_frames"]))
    expect(frames).to_have_attribute("step", str(limits["frame_multiple"]))
    expect(page.locator("#width")).to_have_attribute("step", str(limits["size_multiple"]))
    expect(page.locator("#steps")).to_have_attribute("max", str(limits["max_steps"]))
    frames_hint = f"4n+1, {limits['min_frames']}–{limits['max_frames']}"
    expect(page.locator("#num_frames-hint")).to_contain_text(frames_hint)
    # capabilities, and each variant's local status
    expect(page.locator("#model-chips")).to_contain_text("text-to-video")
    expect(page.locator("#model-chips")).to_contain_text("image-to-video")
    bf16 = page.locator("[data-testid=variant-bf16]")
    expect(bf16.locator("[data-testid=variant-state]")).to_have_text("not downloaded")
    expect(bf16.locator("[data-testid=download-variant]")).to_be_visible()

    # the image input follows engine.inputs.image: optional, required, none
    expect(page.locator("#image-field")).to_be_visible()
    expect(page.locator("#image-tag")).to_have_text("optional")
    choose(page, "i2v-A14B", "dev")
    expect(page.locator("#image-tag")).to_have_text("required")
    expect(page.locator("#image")).to_have_attribute("required", "")
    choose(page, "t2v-A14B", "dev")
    expect(page.locator("#image-field")).to_be_hidden()


def test_a_job_submitted_from_the_page_shows_progress_and_plays(server: WanServer,
                                                                 open_page: Callable[..., Any]) -> None:
    page = open_page(server)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    page.evaluate(RECORD_PROGRESS)
    choose(page)
    card = submit(page, "a red fox runs through fresh snow", steps="40")
    video_id = card.get_attribute("data-id")
    assert video_id and video_id.startswith("video_")
    expect(card).to_have_attribute("data-status", "completed", timeout=JOB_TIMEOUT_MS)
    expect(card.locator("[data-testid=status]")).to_have_text("completed")
    expect(page.locator("#gallery [data-testid=video-card]", has_text="a red fox")).to_have_count(1)

    values = page.evaluate("id => window.__progress[id]", video_id)
    stages = page.evaluate("id => window.__stages[id]", video_id)
    assert values, "the progress bar never showed a value"
    assert any(0 < value < 100 for value in values), values
    assert all(a <= b for a, b in zip(values, values[1:])), f"the bar went backwards: {values}"
    assert values[-1] == 100, values
    assert any("step" in stage and "/40" in stage for stage in stages), stages  # step/total
    assert any("left" in stage for stage in stages), stages  # the ETA
    assert server.request("GET", f"/v1/videos/{video_id}")[1]["status"] == "completed"

    # the finished video plays in the page
    player = card.locator("video")
    expect(player).to_have_attribute("src", f"/v1/videos/{video_id}/content")
    page.wait_for_function("v => v.readyState >= 2", arg=player.element_handle(), timeout=30_000)
    player.evaluate("v => v.play()")
    page.wait_for_function("v => v.currentTime > 0", arg=player.element_handle(), timeout=30_000)
    assert player.evaluate("v => [v.videoWidth, v.videoHeight]") == [128, 64]
    expect(card.locator("[data-testid=stage]")).to_contain_text("done")


def test_a_bad_input_shows_the_error_and_its_suggestion(server: WanServer,
                                                        open_page: Callable[..., Any]) -> None:
    page = open_page(server)
    choose(page)
    page.fill("#prompt", "a fox, with a frame count off the grid")
    page.fill("#num_frames", "10")
    page.click("#submit")
    box = page.locator("[data-testid=form-error]")
    expect(box).to_be_visible()
    expect(box.locator("[data-testid=error-code]")).to_have_text("INVALID_PARAMS")
    expect(box.locator("[data-testid=error-message]")).to_contain_text("num_frames 10")
    expect(box.locator("[data-testid=error-suggestions] li")).not_to_have_count(0)
    expect(box.locator("[data-testid=error-suggestions]")).to_contain_text("9")
    # the field the error names is marked, with the message beside it
    expect(page.locator("#num_frames")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#num_frames-error")).to_be_visible()
    expect(page.locator("#width")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("[data-testid=video-card]", has_text="off the grid")).to_have_count(0)
    # fixing the field clears its mark
    page.fill("#num_frames", "9")
    expect(page.locator("#num_frames")).not_to_have_attribute("aria-invalid", "true")
    expect(box).to_be_hidden()


def test_an_image_goes_with_the_job(server: WanServer, open_page: Callable[..., Any], tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "first-frame.png"
    Image.new("RGB", (128, 64), (200, 80, 40)).save(image)
    page = open_page(server)
    choose(page)
    page.set_input_files("#image", str(image))
    expect(page.locator("#image-preview")).to_be_visible()
    card = submit(page, "a fox comes to life from a still image")
    expect(card).to_have_attribute("data-status", "completed", timeout=JOB_TIMEOUT_MS)
    video = server.request("GET", f"/v1/videos/{card.get_attribute('data-id')}")[1]
    assert video["parameters"]["image"] is True


def test_cancel_running_and_queued_jobs_from_the_page(server: WanServer,
                                                      open_page: Callable[..., Any]) -> None:
    """Also takes the screenshot of the page for the docs: a job running, one queued, earlier ones done."""
    api_job(server, "a lighthouse at dusk, waves breaking on the rocks")
    page = open_page(server)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    choose(page)
    long_job = {"steps": "100", "width": "256", "height": "256", "num_frames": "61"}
    running = submit(page, "a slow pan over a misty forest", **long_job)
    queued = submit(page, "a paper boat drifting down a rain gutter", **long_job)
    expect(running).to_have_attribute("data-status", "in_progress", timeout=JOB_TIMEOUT_MS)
    page.wait_for_function(
        "card => Number(card.querySelector('[data-testid=progress]').getAttribute('aria-valuenow')) >= 5",
        arg=running.element_handle(), timeout=JOB_TIMEOUT_MS)
    expect(queued).to_have_attribute("data-status", "queued")
    expect(page.locator("#queue [data-testid=video-card]")).to_have_count(2)

    page.fill("#prompt", "a hummingbird hovering at a red flower, slow motion")
    page.locator("#prompt").blur()
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    queued.locator("[data-testid=cancel]").click()
    expect(queued).to_have_attribute("data-status", "cancelled")
    running.locator("[data-testid=cancel]").click()
    expect(running).to_have_attribute("data-status", "cancelled", timeout=JOB_TIMEOUT_MS)
    for card in (running, queued):
        video_id = card.get_attribute("data-id")
        assert server.wait_for(video_id)["status"] == "cancelled"
        expect(card.locator("[data-testid=cancel]")).to_be_hidden()
        expect(card.locator("[data-testid=delete]")).to_be_visible()
        expect(card.locator("[data-testid=stage]")).to_contain_text("cancelled")
    expect(page.locator("#queue [data-testid=video-card]")).to_have_count(0)


def test_delete_a_finished_video_from_the_page(server: WanServer, open_page: Callable[..., Any]) -> None:
    video_id = api_job(server, "a video to delete")
    assert server.wait_for(video_id)["status"] == "completed"
    page = open_page(server)
    card = page.locator(f"[data-testid=video-card][data-id={video_id}]")
    expect(card).to_have_attribute("data-status", "completed")
    card.locator("[data-testid=delete]").click()
    expect(card).to_have_count(0)
    assert server.request("GET", f"/v1/videos/{video_id}")[0] == 404


def test_download_a_variant_from_the_page(server: WanServer, open_page: Callable[..., Any]) -> None:
    page = open_page(server)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    choose(page, "t2v-A14B", "dev")
    row = page.locator("[data-testid=variant-dev]")
    # not on disk yet; partly there, as some of its blobs are shared with ti2v-5B's dev variant
    expect(row).to_have_attribute("data-state", re.compile("^(missing|partial)$"))
    page.evaluate("""() => {
      window.__variantStates = [];
      new MutationObserver(() => {
        const row = document.querySelector("[data-testid=variant-dev]");
        if (row) window.__variantStates.push(row.dataset.state);
      }).observe(document.getElementById("variant-list"),
                 { childList: true, subtree: true, attributes: true });
    }""")
    row.locator("[data-testid=download-variant]").click()
    expect(row).to_have_attribute("data-state", "complete", timeout=JOB_TIMEOUT_MS)
    expect(row.locator("[data-testid=variant-state]")).to_have_text("on disk")
    expect(row.locator("[data-testid=download-variant]")).to_have_count(0)
    assert "downloading" in page.evaluate("window.__variantStates")
    model = server.request("GET", "/v1/models/t2v-A14B")[1]
    assert next(v for v in model["variants"] if v["name"] == "dev")["state"] == "complete"


def test_progress_falls_back_to_polling_without_the_websocket(server: WanServer,
                                                              open_page: Callable[..., Any]) -> None:
    attempts: list[str] = []

    def refuse(socket: Any) -> None:
        attempts.append(socket.url)
        socket.close()

    page = open_page(server, before_load=lambda page: page.route_web_socket("**/v1/events", refuse))
    expect(page.locator("#connection")).to_have_attribute("data-state", "polling")
    page.evaluate(RECORD_PROGRESS)
    choose(page)
    card = submit(page, "a windmill turning in the wind", steps="12")
    expect(card).to_have_attribute("data-status", "completed", timeout=JOB_TIMEOUT_MS)
    values = page.evaluate("id => window.__progress[id]", card.get_attribute("data-id"))
    assert values[-1] == 100 and all(a <= b for a, b in zip(values, values[1:])), values
    expect(card.locator("video")).to_have_count(1)
    assert len(attempts) >= 2, "the page did not try to reconnect"


def test_api_key_is_asked_for_kept_and_sent(wan_server: Callable[..., WanServer],
                                            open_page: Callable[..., Any]) -> None:
    key = "browser-test-key"
    keyed = wan_server(WAN_API_KEYS=key)
    page = open_page(keyed)
    panel = page.locator("[data-testid=api-key-panel]")
    expect(panel).to_be_visible()
    expect(page.locator("#connection")).to_have_attribute("data-state", "locked")
    expect(page.locator("#api-key")).to_be_focused()
    page.fill("#api-key", key)
    page.click("#api-key-save")
    expect(panel).to_be_hidden()
    assert page.evaluate("localStorage.getItem('wanstudio.apiKey')") == key
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")  # ?api_key= on the socket

    choose(page)
    card = submit(page, "a key-protected fox")
    expect(card).to_have_attribute("data-status", "completed", timeout=JOB_TIMEOUT_MS)
    player = card.locator("video")
    page.wait_for_function("v => v.src.startsWith('blob:') && v.readyState >= 2", arg=player.element_handle())
    assert player.evaluate("v => v.videoWidth") == 128

    # the key survives a reload
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(panel).to_be_hidden()
    expect(page.locator("[data-testid=video-card]", has_text="a key-protected fox")).to_have_count(1)
