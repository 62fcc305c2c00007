"""The explorer end to end in a real browser: Debian's headless Chromium driven by Playwright (PyPI),
against ``galmo serve``'s app served by uvicorn on a free loopback port. Skipped where Playwright or
``/usr/bin/chromium`` is missing (``apt-get install chromium``; ``playwright install`` is not used).

With ``GALMO_SCREENSHOTS=DIR`` the pages are also saved as ``DIR/explorer_<page>.png`` (the
screenshots of ``docs/explorer.md``)."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need Playwright (pip install playwright)")
CHROMIUM = Path(os.environ.get("GALMO_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.is_file():
    pytest.skip(f"the browser tests need Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from galmo.cli import main
from galmo.web.app import create_app
from galmo.web.labels import EXPORT, JOURNAL, LabelStore

sys.path.insert(0, str(Path(__file__).parent))
from supervised_data import make_tiny_source
from web_data import FAST, cluster_run, trained_run

SHOTS = os.environ.get("GALMO_SCREENSHOTS")
TIMEOUT_MS = 15_000


class Server:
    """The explorer of ``run_dirs`` served by uvicorn in a thread on a free loopback port."""

    def __init__(self, run_dirs, thumbs: Path, who: str = "browser"):
        self.app = create_app(run_dirs, thumb_cache=thumbs, who=who)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(400):  # up to 20 s on loaded cores
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("data") / "tiny.h5", n=72, size=32)


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    epochs = 8 if SHOTS else 1  # the screenshots show a model that has learnt something
    return trained_run(tiny, base / "run", epochs=epochs), cluster_run(tiny, base / "clus")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, errors  # no JavaScript error on any page


def shot(page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"explorer_{name}.png"), full_page=True)


def test_browse_groups_pages_a_galaxy_and_its_neighbour(page, runs, tmp_path):
    run, clus = runs
    with Server([run, clus], tmp_path / "thumbs") as srv:
        page.goto(srv.url + "/")
        shot(page, "runs")
        page.click("a[href='/run/clus/groups']")
        first = page.locator("table.tbl a[href^='/run/clus/groups/']").first
        group = first.get_attribute("href").rsplit("/", 1)[1]
        first.click()
        page.wait_for_url(f"**/run/clus/groups/{group}")
        members = pd.read_parquet(clus / "cluster_catalog.parquet").query(f"group == {group}")["id"]
        shown = page.locator(".gallery a.card span").all_inner_texts()
        assert set(shown) == set(members) and page.locator(".gallery img").count() == len(members)
        shot(page, "group")
        page.goto(srv.url + "/run/run/predictions")
        assert page.locator(".gallery a.card").count() == 48
        page.locator("a[rel=next]").first.click()
        page.wait_for_url("**page=2")
        assert page.locator(".gallery a.card").count() == 72 - 48 and "page 2 of 2" in page.inner_text("main")
        card = page.locator(".gallery a.card").first
        gid = card.locator("span").inner_text()
        card.click()
        page.wait_for_url(f"**/galaxy/{gid}")
        assert page.inner_text("h1") == gid
        page.wait_for_function("() => [...document.querySelectorAll('.bands img')].every(i => i.complete)")
        sizes = page.eval_on_selector_all(".bands img", "is => is.map(i => i.naturalWidth)")
        assert sizes == [32] * 4  # the colour composite and three bands, rendered by the server
        shot(page, "galaxy")
        neighbours = page.locator("h3:has-text('nearest neighbours') + .gallery a.card")
        assert neighbours.count() == 10
        nb = neighbours.nth(2).locator("span").inner_text()
        neighbours.nth(2).click()
        page.wait_for_url(f"**/galaxy/{nb}")
        assert page.inner_text("h1") == nb and nb != gid


def _answer(page, key: str, expect: str) -> None:
    page.keyboard.press(key)
    page.wait_for_function("t => document.getElementById('status').textContent.startsWith(t)", arg=expect)


def test_label_three_with_the_keyboard_undo_restart_and_finetune(page, runs, tiny, tmp_path):
    run, _ = runs
    (run / JOURNAL).unlink(missing_ok=True)
    names = json.loads((run / "config.json").read_text())["supervised"]["class_names"]
    with Server([run], tmp_path / "thumbs", who="ana") as srv:
        page.goto(srv.url + "/run/run/queue")
        total = int(page.inner_text("#count").split("/")[1])
        given = []
        for key in ("1", "0", "2"):
            cur = page.get_attribute("#cur-img", "alt")
            _answer(page, key, f"saved {cur}: {names[int(key)]}")
            assert page.get_attribute("#cur-img", "alt") != cur  # the next galaxy, at once
            given.append((cur, int(key)))
        assert page.inner_text("#count") == f"3 / {total}"
        shot(page, "queue")
        skipped = page.get_attribute("#cur-img", "alt")
        _answer(page, "s", f"saved {skipped}: ")
        page.click("#undo")
        page.wait_for_function("() => document.getElementById('status').textContent.startsWith('undid')")
        assert page.get_attribute("#cur-img", "alt") == skipped and page.inner_text("#count") == f"3 / {total}"
    on_disk = LabelStore(run, names).current()  # read back from the journal, as a new process would
    assert {i: e["label"] for i, e in on_disk.items()} == dict(given)
    assert {e["who"] for e in on_disk.values()} == {"ana"}
    with Server([run], tmp_path / "thumbs") as srv:  # a restart
        page.goto(srv.url + "/run/run/queue")
        assert page.inner_text("#count") == f"3 / {total}" and page.get_attribute("#cur-img", "alt") == skipped
        page.goto(srv.url + "/run/run/labels")
        assert sorted(page.locator("table.tbl td:first-child a").all_inner_texts()) == sorted(i for i, _ in given)
        with page.expect_download() as dl:
            page.click(f"a[href='/run/run/{EXPORT}']")
        exported = tmp_path / EXPORT
        dl.value.save_as(exported)
    table = pd.read_parquet(exported)
    assert list(zip(table["id"], table["label"])) == given
    out = tmp_path / "run2"
    assert main(["finetune", str(run), "--expert-labels", str(exported), "--data", str(tiny), "--out", str(out),
                 "--epochs", "1", *FAST]) == 0
    with Server([out], tmp_path / "thumbs") as srv:
        page.goto(srv.url + "/run/run2")
        assert "Fine-tuned on expert labels" in page.inner_text("main")
        page.goto(srv.url + "/run/run2/queue")
        assert page.inner_text("#count").startswith("3 / ")  # the labels carried over to the new run


def test_embedding_map_colours_by_group_and_a_click_opens_the_galaxy(page, runs, tmp_path):
    run, clus = runs
    with Server([run, clus], tmp_path / "thumbs") as srv:
        page.goto(srv.url + "/run/run")
        page.click("a[href='/run/run/map']")
        page.wait_for_selector("#map[data-ready]")
        assert page.evaluate("galmoMap.ids().length") == 72 and "72 galaxies" in page.inner_text("#map-note")
        options = page.eval_on_selector_all("#colour option", "os => os.map(o => o.value)")
        assert {"label", "group:clus", "predicted:run", "outlier:run-outliers"} <= set(options)
        page.select_option("#colour", "group:clus")
        page.wait_for_selector("#map[data-ready='group:clus']")
        groups = pd.read_parquet(clus / "cluster_catalog.parquet")["group"].astype(str).replace("-1", "unclassified")
        assert set(page.locator("#legend div").all_inner_texts()) == set(groups)
        assert "colour=group%3Aclus" in page.url  # the choice is kept in the address
        shot(page, "map")
        target = page.evaluate("galmoMap.ids()[17]")
        x, y = page.evaluate("id => galmoMap.point(id)", target)
        page.mouse.move(x, y)
        hovered = page.inner_text("#hover")
        hx, hy = page.evaluate("id => galmoMap.point(id)", hovered)
        assert (hx - x) ** 2 + (hy - y) ** 2 <= 64  # the point under the mouse (or one drawn on it)
        page.mouse.click(x, y)
        page.wait_for_url(f"**/galaxy/{hovered}")
        assert page.inner_text("h1") == hovered


def similar_to(emb_file: Path, ident: str, k: int = 10) -> list[float]:
    """The similarities of the ``k`` nearest galaxies to ``ident`` (itself included), by ``galmo similar``'s path."""
    from galmo.methods.embeddings.index import index_for, neighbours

    index, emb, _ = index_for(emb_file)
    return neighbours(index, emb, ident, k=k)["similarity"].round(3).tolist()


def test_upload_an_image_for_its_prediction_and_neighbours(page, runs, tiny, tmp_path):
    run, _ = runs
    from astropy.io import fits

    from galmo.sources import open_source

    image = open_source(tiny).read([5], kind="image")[0]
    fits.PrimaryHDU(image).writeto(tmp_path / "mine.fits")
    (tmp_path / "notes.txt").write_text("not an image")
    expected = pd.read_parquet(run / "predictions.parquet").set_index("id").loc["g0005"]
    with Server([run], tmp_path / "thumbs") as srv:
        page.goto(srv.url + "/run/run")
        page.click("a[href='/run/run/upload']")
        page.set_input_files("input[type=file]", str(tmp_path / "mine.fits"))
        page.click("#upload button")
        page.wait_for_selector("#upload-result")
        assert page.inner_text("#upload-pred") == expected["pred_name"]
        shown = re.search(r"confidence ([0-9.]+)", page.inner_text("#upload-result"))[1]
        assert float(shown) == pytest.approx(expected["confidence"], abs=2e-3)  # as galmo predict said
        assert page.evaluate("document.querySelector('#upload-result img').naturalWidth") == 32
        sims = [float(t.split()[1]) for t in page.locator("#upload-result .gallery a.card small").all_inner_texts()]
        assert sims == pytest.approx(similar_to(run / "embeddings.parquet", "g0005"), abs=2e-3)  # as its source galaxy's
        shot(page, "upload")
        page.set_input_files("input[type=file]", str(tmp_path / "notes.txt"))
        page.click("#upload button")
        page.wait_for_selector("#upload-error")
        assert page.inner_text("#upload-error").startswith("notes.txt: not a PNG, JPEG or FITS image")
