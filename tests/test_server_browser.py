"""The web UI at `GET /`, driven in a real browser (Playwright and Debian's headless Chromium) against a
real `wan serve` running the bundled dev models.

One server and one browser serve the whole module (each test gets a fresh page); the API-key and mock tests
start their own servers. Nothing leaves loopback: the Hub endpoint is a closed local port, the dev variants
come from the package, and the page loads no external resource.

Not driven here: the fallback note of a video card. A fallback happens only when the planner finds that the
model does not fit the machine, or when the model runs out of memory; the dev models fit any machine, and
nothing on a CPU makes them run out of memory for real (tests/test_oom_recovery.py covers the engine side).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from wanserver import WanServer, own_server

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install -e '.[test]')")
expect = sync_api.expect
expect.set_options(timeout=15_000)  # a loaded CI machine is slow; a passing check returns at once anyway

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    _MISSING = "no chromium binary: run scripts/install-browser.sh (Debian's chromium package)"
    if os.environ.get("CI"):  # CI installs it (.ci/run): a missing browser there is a failure, not a skip
        pytest.fail(_MISSING, pytrace=False)
    pytest.skip(_MISSING, allow_module_level=True)

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
    with own_server(tmp_path_factory.mktemp("browser-server")) as wan:
        yield wan


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


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real LoRA (peft layers for the ti2v-5B dev transformer, saved as diffusers writes them)."""
    from test_lora import Pipelines, lora_layers, save_diffusers_lora

    pipelines = Pipelines(tmp_path_factory.mktemp("lora-store"))
    layers, config = lora_layers(pipelines["ti2v-5B"].pipeline.transformer, seed=7)
    return save_diffusers_lora(tmp_path_factory.mktemp("lora") / "browser-grain.safetensors", layers, config)


BOUNDARY = "wanstudio-browser-test-boundary"


def _multipart(fields: dict[str, str], file: Path) -> bytes:
    """A multipart/form-data body of text `fields` and `file` as the `file` part (POST /v1/loras)."""
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
             for key, value in fields.items()]
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{file.name}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + file.read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


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

    # the machine, as /readyz describes it, in the header and beside the memory options
    hardware = server.request("GET", "/readyz")[1]["hardware"]
    line = page.locator("[data-testid=hardware]")
    expect(line).to_contain_text(f"{hardware['cpu_count']} core")
    expect(line).to_contain_text("RAM")
    if hardware["gpus"]:
        expect(line).to_contain_text(hardware["gpus"][0]["name"])
    else:
        expect(line).to_contain_text("CPU only")
    # the memory profiles: automatic first (what the planner picks here), then the model's own
    page.click("#advanced summary")
    profiles = page.locator("#memory_profile option").evaluate_all("options => options.map(o => o.value)")
    assert profiles == ["", *[p["name"] for p in model["engine"]["memory_profiles"]]]
    fit = next(f for f in model["fits"] if f["variant"] == VARIANT)
    automatic = re.compile(f"^Automatic \\({fit['memory_profile']} here")
    expect(page.locator("#memory_profile option").first).to_have_text(automatic)
    expect(page.locator("#memory_profile-hint")).to_contain_text(fit["reason"])
    expect(page.locator("#allow_fallback")).not_to_be_checked()
    expect(page.locator("#allow_fallback-hint")).to_contain_text("smaller model")

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


def test_a_lora_uploaded_from_the_page_is_chosen_weighted_and_applied(
        server: WanServer, lora_file: Path, open_page: Callable[..., Any]) -> None:
    page = open_page(server)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    choose(page)
    page.click("#lora-upload summary")
    page.set_input_files("#lora-file", str(lora_file))
    expect(page.locator("#lora-name")).to_have_value("browser-grain")  # from the file's name
    page.click("[data-testid=lora-upload]")
    expect(page.locator("[data-testid=lora-upload-status]")).to_contain_text("Uploaded browser-grain")
    expect(page.locator("[data-testid=lora-upload-progress]")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("[data-testid=lora-upload-error]")).to_be_hidden()
    entry = page.locator("[data-testid=lora-entry][data-name=browser-grain]")
    expect(entry).to_contain_text("rank 4")
    assert "browser-grain" in [e["name"] for e in server.request("GET", "/v1/loras")[1]["data"]]

    # chosen for the job, with a weight: the number and the slider stay in step
    entry.locator("[data-testid=lora-add]").click()
    expect(entry.locator("[data-testid=lora-add]")).to_be_disabled()  # once per job
    chosen = page.locator("[data-testid=lora-chosen][data-name=browser-grain]")
    expect(chosen.locator("[data-testid=lora-weight]")).to_have_value("1")
    chosen.locator("[data-testid=lora-weight]").fill("0.7")
    expect(chosen.locator("[data-testid=lora-weight-range]")).to_have_value("0.7")
    expect(chosen.locator("[data-testid=lora-weight-2]")).to_have_count(0)  # one transformer
    choose(page, "t2v-A14B", "dev")  # two experts: a low-noise weight too; the choice stays
    expect(chosen.locator("[data-testid=lora-weight-2]")).to_be_visible()
    expect(chosen.locator("[data-testid=lora-weight]")).to_have_value("0.7")
    choose(page)
    expect(chosen.locator("[data-testid=lora-weight-2]")).to_have_count(0)

    card = submit(page, "a fox in fresh snow, with film grain")
    expect(card.locator("[data-testid=lora-asked]")).to_have_text("LoRA browser-grain ×0.7")
    expect(card).to_have_attribute("data-status", "completed", timeout=JOB_TIMEOUT_MS)
    expect(card.locator("[data-testid=lora-applied]")).to_have_text("LoRA browser-grain ×0.7")
    expect(card.locator("[data-testid=lora-skipped]")).to_have_count(0)
    video = server.request("GET", f"/v1/videos/{card.get_attribute('data-id')}")[1]
    assert video["parameters"]["loras"] == [{"name": "browser-grain", "weight": 0.7, "weight_2": None}]
    applied = [(lora["name"], lora["weights"]) for lora in video["loras_applied"]]
    assert applied == [("browser-grain", {"transformer": 0.7})]

    # Reuse brings the LoRA and its weight back into a reset form
    page.click("#reset-defaults")
    expect(page.locator("[data-testid=lora-chosen]")).to_have_count(0)
    card.locator("[data-testid=reuse]").click()
    expect(chosen.locator("[data-testid=lora-weight]")).to_have_value("0.7")

    # deleted from the catalogue (a second click confirms): the job's choice says it is gone
    entry.locator("[data-testid=lora-delete]").click()
    expect(entry.locator("[data-testid=lora-delete]")).to_have_text("Delete?")
    entry.locator("[data-testid=lora-delete]").click()
    expect(entry).to_have_count(0)
    assert "browser-grain" not in [e["name"] for e in server.request("GET", "/v1/loras")[1]["data"]]
    expect(chosen.locator(".lora-problem")).to_contain_text("not in the catalogue")


def test_a_bad_lora_upload_shows_the_error_and_a_broken_file_its_problem(
        server: WanServer, tmp_path: Path, open_page: Callable[..., Any]) -> None:
    noise = tmp_path / "noise.safetensors"
    noise.write_bytes(os.urandom(4000))
    page = open_page(server)
    choose(page)
    page.click("#lora-upload summary")
    page.set_input_files("#lora-file", str(noise))
    page.click("[data-testid=lora-upload]")
    box = page.locator("[data-testid=lora-upload-error]")
    expect(box).to_be_visible()
    expect(box.locator("[data-testid=error-code]")).to_have_text("INVALID_PARAMS")
    expect(box.locator("[data-testid=error-message]")).to_contain_text("not a safetensors file")
    expect(box.locator("[data-testid=error-suggestions] li").first).to_contain_text(".safetensors version")
    expect(page.locator("#lora-file")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("[data-testid=lora-entry][data-name=noise]")).to_have_count(0)
    assert "noise" not in [e["name"] for e in server.request("GET", "/v1/loras")[1]["data"]]

    # a damaged file put in the catalogue folder by hand: listed with its problem, and not selectable
    broken = Path(server.env["MODELS_ROOT"]) / "loras" / "hand-copied.safetensors"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(os.urandom(100))
    try:
        page.click("#lora-refresh")
        entry = page.locator("[data-testid=lora-entry][data-name=hand-copied]")
        expect(entry.locator("[data-testid=lora-problem]")).to_contain_text("not a safetensors file")
        expect(entry.locator("[data-testid=lora-add]")).to_be_disabled()
    finally:
        broken.unlink()


def test_a_memory_profile_and_fallback_go_with_the_job_and_show_on_its_card(
        server: WanServer, open_page: Callable[..., Any]) -> None:
    page = open_page(server)
    choose(page)
    page.click("#advanced summary")
    page.select_option("#memory_profile", "model_offload")
    page.check("#allow_fallback")
    expect(page.locator("#advanced-summary")).to_have_text("model_offload · fallback allowed")
    card = submit(page, "a heron lifts off a misty lake")
    expect(card.locator("[data-testid=memory-profile]")).to_have_text("memory: model_offload")  # asked
    expect(card).to_have_attribute("data-status", "completed", timeout=JOB_TIMEOUT_MS)
    video = server.request("GET", f"/v1/videos/{card.get_attribute('data-id')}")[1]
    parameters = video["parameters"]
    assert parameters["memory_profile"] == "model_offload" and parameters["allow_fallback"] is True
    assert video["memory_plan"]["profile"] == "model_offload"
    assert video["mock"] is False and video["fallback"] is None
    memory = card.locator("[data-testid=memory-profile]")
    expect(memory).to_have_text("memory: model_offload")  # used
    expect(memory).to_have_attribute("title", re.compile("asked for model_offload"))  # the plan's reason
    expect(card.locator("[data-testid=fallback-allowed]")).to_be_visible()
    expect(card.locator("[data-testid=fallback-note]")).to_be_hidden()
    expect(card.locator("[data-testid=mock-badge]")).to_be_hidden()

    # reset clears the options; Reuse brings them back
    page.click("#reset-defaults")
    expect(page.locator("#memory_profile")).to_have_value("")
    expect(page.locator("#allow_fallback")).not_to_be_checked()
    card.locator("[data-testid=reuse]").click()
    expect(page.locator("#memory_profile")).to_have_value("model_offload")
    expect(page.locator("#allow_fallback")).to_be_checked()


def test_a_mock_video_is_marked_as_one_on_its_card(wan_server: Callable[..., WanServer],
                                                  open_page: Callable[..., Any]) -> None:
    """WAN_ALLOW_MOCK=1 and a variant that cannot be fetched (the Hub is a closed port): the server makes a
    test pattern, and the card must say so loudly."""
    mocking = wan_server(WAN_ALLOW_MOCK="1", WAN_DEVICE="cpu")
    page = open_page(mocking)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    choose(page, MODEL, "bf16")  # not downloaded, and cannot be
    card = submit(page, "a fox that cannot be made", width="64", height="64", num_frames="5", steps="2")
    expect(card).to_have_attribute("data-status", "completed", timeout=JOB_TIMEOUT_MS)
    video = mocking.request("GET", f"/v1/videos/{card.get_attribute('data-id')}")[1]
    assert video["mock"] is True, video
    badge = card.locator("[data-testid=mock-badge]")
    expect(badge).to_be_visible()
    expect(badge).to_have_text("MOCK — synthetic test pattern, not generated")
    expect(card).to_have_class(re.compile(r"\bis-mock\b"))
    expect(card.locator("[data-testid=warnings]")).to_contain_text("MOCK VIDEO")
    expect(card.locator("[data-testid=memory-profile]")).to_have_text("memory: none (mock)")
    expect(card.locator("video")).to_have_attribute("aria-label", re.compile("^Mock test pattern"))


def test_cancel_running_and_queued_jobs_from_the_page(server: WanServer, lora_file: Path,
                                                      open_page: Callable[..., Any]) -> None:
    """Also takes the screenshot of the page for the docs: a job running, one queued, earlier ones done,
    and a LoRA chosen for the next."""
    api_job(server, "a lighthouse at dusk, waves breaking on the rocks")
    status, body, _ = server.request("POST", "/v1/loras", data=_multipart({"name": "film-grain"}, lora_file),
                                     headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert status == 201, body
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
    page.locator("[data-testid=lora-entry][data-name=film-grain] [data-testid=lora-add]").click()
    weight = page.locator("[data-testid=lora-chosen] [data-testid=lora-weight]")
    weight.fill("0.8")
    weight.blur()
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
