"""demo.py as a user meets it: a real headless chromium (Debian's, through selenium) uploads real images to the page
and reads back what it shows, which must be what predict.py and caption.py print for the same files."""

from __future__ import annotations

import csv
import importlib.util
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from omegaconf import open_dict
from scripts import REPO, stop

from tincap.demo.server import example_images, free_port
from tincap.runtime.errors import InvalidInput

URL_LINE = re.compile(r"^Demo: (http://\S+) \| Run dir: ", re.MULTILINE)
START_S = 180  # a loaded 2-core machine needs ~40 s to import torch, Lightning and Gradio; an idle one ~8 s
WAIT_S = 60  # for one request's result to show


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (a user's machine without the extras), or None."""
    for module, install in (("gradio", "pip install -e '.[demo]'"), ("selenium", "pip install -e '.[dev]'")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({install})"
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not found: apt-get install chromium chromium-driver (Debian)"
    return None


# a mark, not a skip inside a fixture: the session's checkpoint fixtures would be trained before that skip
NO_BROWSER = browser_missing()
needs_browser = pytest.mark.skipif(NO_BROWSER is not None, reason=str(NO_BROWSER))


@dataclass
class Demo:
    """A running `python demo.py` and where it serves."""

    url: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_script(script: str, folder: Path, *overrides: str) -> subprocess.Popen:
    """An entry script started in the background, its output going to <folder>/<script>.log (a pipe could fill up)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{script}.log").open("w") as log:
        return subprocess.Popen([sys.executable, str(REPO / script), *overrides, f"paths.log_dir={folder / 'logs'}"],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, folder: Path, script: str) -> str:
    """The output of a background script that must succeed."""
    code = proc.wait(timeout=600)
    output = (folder / f"{script}.log").read_text()
    assert code == 0, f"{script} failed ({code}):\n{output[-3000:]}"
    return output


def wait_for_url(proc: subprocess.Popen, log: Path) -> str:
    """The URL of demo.py's closing line, once printed (the page is served by then)."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        found = URL_LINE.search(log.read_text())
        if found:
            return found[1]
        assert proc.poll() is None, f"demo.py stopped ({proc.returncode}) before serving:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"demo.py printed no URL in {START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium that can reach this machine only: a page that fetched anything from the internet fails."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit chromedriver: selenium would otherwise try to download one
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    yield driver
    driver.quit()


def wait_until(driver: Any, what: str, check: Callable[[], Any]) -> Any:
    """check()'s first truthy value within WAIT_S; the failure says what the page showed instead."""
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def probe(_: Any) -> Any:
        try:
            return check()
        except WebDriverException:  # an element Svelte replaced meanwhile
            return None

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(probe)
    except TimeoutException:
        raise AssertionError(f"page never showed {what}; it shows:\n{driver.find_element('tag name', 'body').text}") \
            from None


def open_page(driver: Any, url: str, output: str) -> None:
    """Load the page until its drop zone and the element with id `output` are drawn."""
    driver.get(url)
    wait_until(driver, f"the drop zone and #{output}", lambda: driver.find_elements(
        "css selector", "#photo input[type=file]") and driver.find_elements("id", output))


def upload(driver: Any, path: Path) -> None:
    """Pick a file in the drop zone's file input, as a user's file dialog does."""
    driver.find_element("css selector", "#photo input[type=file]").send_keys(str(path))


def shown_top1(driver: Any) -> str:
    return driver.find_element("css selector", "#classes [data-testid=label-output-value]").text


def network_errors(driver: Any) -> list[str]:
    """Console messages of requests that failed: a page that needs the internet logs them here."""
    return [e["message"] for e in driver.get_log("browser") if "net::" in e["message"]]


# ----------------------------------------------------------------------------------------------- the classifier's page


@pytest.fixture(scope="module")
def classifier_page(tin30_classifier: Path, tin30_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """demo.py on the classifier (examples: the first test image) while predict.py classifies 16 test images."""
    base = tmp_path_factory.mktemp("demo_classifier")
    photos, examples = base / "photos", base / "examples"
    photos.mkdir()
    examples.mkdir()
    for f in sorted((tin30_root / "test_set" / "test_set").iterdir())[:16]:
        (photos / f.name).symlink_to(f)
    first = min(f.name for f in photos.iterdir())
    (examples / first).symlink_to(photos / first)
    predict = start_script("predict.py", base, f"ckpt_path={tin30_classifier}", f"images={photos}", "top_k=5",
                           f"out={base / 'predictions.csv'}")
    demo = start_script("demo.py", base, f"ckpt_path={tin30_classifier}", f"examples={examples}", "port=0")
    try:
        finish(predict, base, "predict.py")
        top5: dict[str, list[tuple[str, float]]] = {}
        for row in csv.DictReader((base / "predictions.csv").open()):
            top5.setdefault(row["file"], []).append((row["class"], float(row["probability"])))
        top1 = {name: ranked[0][0] for name, ranked in top5.items()}
        # another class, so that the page's answer cannot be the previous one left in place
        second = next((f for f in sorted(top1) if top1[f] != top1[first]), None)
        assert second, f"predict.py gave all 16 test images one class {top1[first]}; the test needs two classes"
        url = wait_for_url(demo, base / "demo.py.log")
        yield {"demo": Demo(url, demo, base / "demo.py.log"), "top1": top1, "top5": top5, "photos": photos,
               "first": first, "second": second}
    finally:
        stop(predict)
        stop(demo)


@needs_browser
def test_classifier_page_shows_predict_py_top1_gradcam_and_an_error_for_a_non_image(classifier_page: dict, browser: Any,
                                                                                     tmp_path: Path) -> None:
    demo: Demo = classifier_page["demo"]
    top1, photos = classifier_page["top1"], classifier_page["photos"]
    first, second = classifier_page["first"], classifier_page["second"]
    open_page(browser, demo.url, "classes")
    upload(browser, photos / first)
    wait_until(browser, f"top-1 '{top1[first]}' (predict.py's) for {first}", lambda: shown_top1(browser) == top1[first])
    bars = [bar.text.split("\n") for bar in browser.find_elements("css selector", "#classes .confidence-set")]
    # top_k=5 classes with their probability bars: predict.py's five, in its order, with its probabilities
    assert [name for name, _ in bars] == [name for name, _ in classifier_page["top5"][first]]
    for (_, shown), (_, probability) in zip(bars, classifier_page["top5"][first]):
        assert abs(float(shown.rstrip("%")) - 100 * probability) <= 0.5 + 1e-6, (shown, probability)
    heatmap = wait_until(browser, "the Grad-CAM overlay",
                         lambda: browser.find_elements("css selector", "#gradcam img[src]"))
    assert f"Grad-CAM of '{top1[first]}'" in browser.find_element("id", "gradcam").text
    assert heatmap[0].get_property("naturalWidth") == 256  # explain.py's overlay size
    screenshot = tmp_path / "demo_classifier.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one

    not_an_image = tmp_path / "notes.jpg"  # text under an image's name: it passes the browser's file-type filter
    not_an_image.write_text("shopping list: flour, eggs\n")
    upload(browser, not_an_image)
    wait_until(browser, "an error naming notes.jpg", lambda: "notes.jpg is not an image" in browser.find_element(
        "tag name", "body").text)
    browser.save_screenshot(str(tmp_path / "demo_classifier_error.png"))
    assert demo.alive()

    upload(browser, photos / second)  # the server goes on with the next image
    wait_until(browser, f"top-1 '{top1[second]}' for {second}", lambda: shown_top1(browser) == top1[second])
    example = browser.find_element("css selector", f"#examples button.gallery-item img[src$='{first}']")
    example.click()
    wait_until(browser, f"top-1 '{top1[first]}' for the example {first}", lambda: shown_top1(browser) == top1[first])
    assert demo.alive() and not network_errors(browser)
    assert "Traceback" not in demo.log.read_text()  # the bad upload is a message on the page, not a server error


def test_any_free_port_an_address_of_no_machine_and_an_examples_folder_without_images(tmp_path: Path) -> None:
    assert free_port("127.0.0.1", 0) > 0
    with pytest.raises(InvalidInput, match=r"host=192\.0\.2\.1 port=0: cannot listen there"):
        free_port("192.0.2.1", 0)  # a documentation address, on no machine
    with pytest.raises(InvalidInput, match=r"port=70000: expected a port number 1-65535"):
        free_port("127.0.0.1", 70000)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InvalidInput, match=rf"examples={tmp_path}: the folder holds no .jpg/.jpeg/.png/... images"):
        example_images(str(tmp_path))
    assert example_images(None) == []


def test_demo_mistakes_are_one_line_before_anything_starts(compose_train, capsys, tmp_path: Path) -> None:
    from tincap.commands.demo import run

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for overrides, message in (
            ([f"ckpt_path={tmp_path / 'none.ckpt'}", "port=0"], f"ckpt_path={tmp_path / 'none.ckpt'}: file not found"),
            (["ckpt_path=x.ckpt", f"port={port}"], f"port={port}: already in use on 127.0.0.1"),
            (["ckpt_path=x.ckpt", f"examples={tmp_path / 'nowhere'}"], f"examples={tmp_path / 'nowhere'}: no such folder"),
        ):
            cfg = compose_train(*overrides, config_name="demo")
            with open_dict(cfg):
                del cfg["hydra"]  # as Hydra hands the config to the task function
            with pytest.raises(SystemExit):
                run(cfg)
            err = capsys.readouterr().err
            assert err.startswith(f"Error: {message}") and "Traceback" not in err, err


# ----------------------------------------------------------------------------------------------- the captioner's page


@pytest.fixture(scope="module")
def captioner_page(flickr8k_captioner: Path, flickr8k_small: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """demo.py on the attention captioner while caption.py captions the same dev image with beam 3."""
    base = tmp_path_factory.mktemp("demo_captioner")
    name = (flickr8k_small / "Flickr_8k.devImages.txt").read_text().split()[0]
    photo = flickr8k_small / "images" / name
    caption = start_script("caption.py", base, f"ckpt_path={flickr8k_captioner}", f"images={photo}", "beam=3",
                           f"out={base / 'captions.csv'}")
    demo = start_script("demo.py", base, f"ckpt_path={flickr8k_captioner}", "beam=3", "port=0")
    try:
        finish(caption, base, "caption.py")
        [row] = csv.DictReader((base / "captions.csv").open())
        url = wait_for_url(demo, base / "demo.py.log")
        yield {"demo": Demo(url, demo, base / "demo.py.log"), "photo": photo, "caption": row["caption"]}
    finally:
        stop(caption)
        stop(demo)


@pytest.mark.slow  # the default suite's browser test is the classifier page's; this one adds ~20 s
@needs_browser
def test_captioner_page_shows_caption_py_caption_and_each_words_attention(captioner_page: dict, browser: Any,
                                                                          tmp_path: Path) -> None:
    demo: Demo = captioner_page["demo"]
    expected = captioner_page["caption"]
    open_page(browser, demo.url, "caption")
    assert "Caption (beam 3)" in browser.find_element("id", "caption").text
    upload(browser, captioner_page["photo"])
    shown = wait_until(browser, "a caption", lambda: browser.find_element(
        "css selector", "#caption textarea").get_attribute("value"))
    assert shown == expected  # caption.py beam=3 on the same file
    labels = wait_until(browser, "one attention overlay per word", lambda: [
        e.text for e in browser.find_elements("css selector", "#attention .caption-label")] or None)
    assert [label.split()[0] for label in labels] == expected.split()
    assert all(re.fullmatch(r"\S+ \d+%", label) for label in labels), labels  # the word and its peak weight
    assert len(browser.find_elements("css selector", "#attention img[src]")) == len(labels)
    screenshot = tmp_path / "demo_captioner.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 20_000
    assert demo.alive() and not network_errors(browser)


def test_captioner_page_shows_the_transformers_cross_attention_per_word(flickr8k_transformer_captioner: Path,
                                                                        flickr8k_small: Path) -> None:
    """The page's function on a Transformer captioner: caption.py's beam-3 caption, and one overlay per word drawn
    from the last layer's cross-attention, exactly the weights its decoding step computed for that word."""
    from tincap.data.cache import decode_files
    from tincap.demo.attention import word_attention
    from tincap.demo.captioner_page import CaptionerDemo
    from tincap.inference.torch_backend import caption_files
    from tincap.tasks.captioner import Captioner
    from tincap.tasks.loading import load_task

    task = load_task(flickr8k_transformer_captioner, Captioner).eval()
    photo = flickr8k_small / "images" / (flickr8k_small / "Flickr_8k.devImages.txt").read_text().split()[0]
    caption, strip = CaptionerDemo(task, 3)({"path": str(photo), "orig_name": photo.name})
    [(_, expected)] = caption_files(task, [photo], 3, batch_size=1)
    assert caption == expected and len(strip) == len(caption.split()) > 0
    assert [label.split()[0] for _, label in strip] == caption.split()
    assert all(overlay.shape == (160, 160, 3) for overlay, _ in strip)
    pixels = decode_files([photo], task.data_info["image_size"]).images[0]
    maps = word_attention(task, pixels, caption)
    side = int(len(maps[0][1].ravel()) ** 0.5)
    assert all(weights.shape == (side, side) and abs(weights.sum() - 1) < 1e-4 for _, weights in maps)
    assert len({weights.tobytes() for _, weights in maps}) > 1  # the words look at different places
