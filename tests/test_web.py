"""The web explorer (``galmo serve``) and the expert loop (``galmo finetune``) on real run folders of a tiny
source: a trained run with predictions, embeddings (the run as encoder) and outliers, and a cluster run.
Pages are driven with FastAPI's TestClient; the browser tests (Playwright, Chromium) are in
``test_web_browser.py``."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient

from galmo.cli import main
from galmo.core.errors import GalmoError
from galmo.web.app import create_app
from galmo.web.config import PAGE_SIZE
from galmo.web.labels import JOURNAL, LabelStore

sys.path.insert(0, str(Path(__file__).parent))
from supervised_data import make_tiny_source
from web_data import FAST, cluster_run, trained_run

EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z]+:)?//|https?://|url\(\s*["']?(?:[a-z]+:)?//""",
                      re.IGNORECASE)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("data") / "tiny.h5", n=72, size=32)


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    """A trained run with predictions of every galaxy, its embeddings and an outliers sub-run."""
    return trained_run(tiny, tmp_path_factory.mktemp("runs") / "run")


@pytest.fixture(scope="module")
def clustered(tiny, tmp_path_factory):
    return cluster_run(tiny, tmp_path_factory.mktemp("runs") / "clus")


@pytest.fixture
def client(run, clustered, tmp_path):
    (run / JOURNAL).unlink(missing_ok=True)
    return TestClient(create_app([run, clustered], thumb_cache=tmp_path / "thumbs", who="tester"))


def _links(html: str) -> list[str]:
    return re.findall(r'href="(/[^"]*)"', html)


# ---------------------------------------------------------------- pages
def test_every_page_renders_with_the_runs_numbers(client, run, clustered):
    runs = client.app.state.explorer.runs
    assert set(runs) == {"run", "run-outliers", "clus"}
    assert runs["run"].kinds == ["supervised", "embeddings"] and runs["clus"].kinds == ["groups"]
    home = client.get("/")
    assert home.status_code == 200 and "/run/run/queue" in home.text and "/run/clus/groups" in home.text
    top1 = json.loads((run / "metrics.json").read_text())["test"]["top1"]
    page = client.get("/run/run").text
    assert f"{top1:.4g}" in page and "/run/run/file/figures/supervised_confusion.png" in page
    assert client.get("/run/run/file/figures/supervised_confusion.png").content[:4] == b"\x89PNG"
    groups = client.get("/run/clus/groups").text
    catalog = pd.read_parquet(clustered / "cluster_catalog.parquet")
    first = int(catalog["group"].max())
    assert f"/run/clus/groups/{first}" in groups
    gallery = client.get(f"/run/clus/groups/{first}").text
    members = catalog.loc[catalog["group"] == first, "id"]
    assert all(f"/galaxy/{i}" in gallery for i in members.head(PAGE_SIZE)) and "agreement" in gallery
    outliers = client.get("/run/run-outliers/outliers").text
    best = pd.read_csv(run / "outliers" / "outliers.csv", dtype={"id": str})["id"].iloc[0]
    assert outliers.index(f"/galaxy/{best}") < outliers.index("</main>")


def test_galaxy_page_shows_bands_probabilities_and_neighbours_that_open(client, run):
    preds = pd.read_parquet(run / "predictions.parquet")
    row = preds.iloc[5]
    html = client.get(f"/galaxy/{row['id']}").text
    assert "/thumb/rgb/" + row["id"] in html and all(f"/thumb/{b}/{row['id']}" in html for b in range(3))
    assert row["pred_name"] in html and f"{row['confidence']:.3f}" in html
    assert "outlier rank" in html and "group" in html
    neighbours = [u for u in _links(html.split("nearest neighbours")[1]) if u.startswith("/galaxy/")]
    assert len(neighbours) == 10 and f"/galaxy/{row['id']}" not in neighbours
    assert client.get(neighbours[0]).status_code == 200
    png = client.get(f"/thumb/rgb/{row['id']}")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


def test_thumbnails_are_rendered_once_and_cached_on_disk(client, tmp_path):
    assert client.get("/thumb/rgb/g0003").status_code == 200
    (cached,) = (tmp_path / "thumbs").rglob("g0003.png")
    from PIL import Image

    assert Image.open(cached).size == (32, 32)
    stamp = cached.stat().st_mtime_ns
    assert client.get("/thumb/rgb/g0003").content == cached.read_bytes() and cached.stat().st_mtime_ns == stamp
    assert client.get("/thumb/7/g0003").status_code == 404  # three bands


def test_search_by_id_and_unknown_ids_are_404_pages(client):
    assert client.get("/search?q=g0007", follow_redirects=False).headers["location"] == "/galaxy/g0007"
    hits = client.get("/search?q=g001").text
    assert all(f"/galaxy/g00{k:02d}" in hits for k in range(10, 20))
    for url in ("/galaxy/no-such-galaxy", "/run/nope", "/run/clus/groups/99", "/run/run/predictions?page=99",
                "/run/clus/queue"):
        r = client.get(url)
        assert r.status_code == 404 and "Traceback" not in r.text and "<h1>404</h1>" in r.text, url


def test_files_outside_the_run_are_refused(client):
    for url in ("/run/run/file/%2e%2e/%2e%2e/etc/passwd", "/run/run/file/..%2F..%2Fconfig.json",
                "/run/run/file/%2Fetc%2Fpasswd", "/run/run/file/last/../../run/config.json"):
        assert client.get(url).status_code == 404, url
    assert client.get("/run/run/file/config.json").status_code == 200
    for url in ("/thumb/rgb/..%2F..%2Fetc%2Fpasswd", "/thumb/..%2F..%2Fetc/g0001", "/galaxy/..%2F..%2Fetc%2Fpasswd"):
        r = client.get(url)  # ids and bands are looked up, never joined into a path
        assert r.status_code == 404 and "root:" not in r.text, url


def test_parameters_of_the_wrong_type_are_a_400_with_a_message(client):
    for url, name in (("/run/run/predictions?page=abc", "page"), ("/run/clus/groups/one", "group"),
                      ("/run/clus/groups/0?page=1.5", "page"), ("/api/run/run/queue?n=many", "n")):
        r = client.get(url)
        assert r.status_code == 400 and name in r.text and "Traceback" not in r.text, (url, r.text[-300:])
    r = client.post("/api/run/run/labels", json={"id": "g0001", "decision": "class", "label": "spiral"})
    assert r.status_code == 400 and "label" in r.json()["error"], r.text


def test_lists_are_paginated(client, run):
    n = len(pd.read_parquet(run / "predictions.parquet"))
    first = client.get("/run/run/predictions?order=entropy").text
    assert first.count('class="card"') == PAGE_SIZE and 'rel="next"' in first
    last = client.get(f"/run/run/predictions?order=entropy&page={-(-n // PAGE_SIZE)}").text
    assert last.count('class="card"') == n - PAGE_SIZE * (-(-n // PAGE_SIZE) - 1) and 'rel="next"' not in last
    assert client.get("/run/run/predictions?order=sideways").status_code == 400


# ---------------------------------------------------------------- offline
def test_nothing_is_loaded_from_another_site(client, run):
    pages = ["/", "/run/run", "/run/clus", "/run/clus/groups", "/run/clus/groups/0", "/run/run/predictions",
             "/run/run-outliers/outliers", "/run/run/queue", "/run/run/labels", "/galaxy/g0001", "/search?q=g0",
             "/galaxy/nothing", "/run/run/map", "/run/run/upload"]
    html = {u: client.get(u).text for u in pages}
    assets = {a for h in html.values() for a in re.findall(r'(?:src|href)="(/static/[^"]+)"', h)}
    assert {"/static/style.css", "/static/queue.js", "/static/map.js"} <= assets
    served = {**html, **{a: client.get(a).text for a in assets}}
    found = {u: EXTERNAL.findall(t) for u, t in served.items() if EXTERNAL.search(t)}
    assert not found, found


# ---------------------------------------------------------------- the expert queue
def test_queue_page_has_the_keyboard_shortcuts_and_preloads_the_next(client, run):
    page = client.get("/run/run/queue?order=margin").text
    names = json.loads((run / "config.json").read_text())["supervised"]["class_names"]
    assert all(f'data-label="{k}"' in page for k in range(len(names))) and "/static/queue.js" in page
    items = json.loads(re.search(r'<script id="queue-items" type="application/json">(.*?)</script>', page, re.DOTALL)[1])
    assert len(items) == 2  # the current galaxy and the next (preloaded by the script)
    js = client.get("/static/queue.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    for needle in ("keydown", '"s"', '"n"', '"u"', "new Image()", "/undo", "/labels"):
        assert needle in js.text, needle


def test_queue_is_least_confident_first_and_holds_out_the_test_split(client, run):
    preds = pd.read_parquet(run / "predictions.parquet")
    split = pd.read_csv(run / "split.csv", dtype={"id": str}).set_index("id")["split"]
    pool = preds[preds["id"].map(split) != "test"].sort_values("confidence", kind="stable")
    got = client.get("/api/run/run/queue?n=5").json()
    assert [i["id"] for i in got["items"]] == pool["id"].head(5).tolist()
    assert got["progress"] == {"done": 0, "total": len(pool)}
    by_entropy = client.get("/api/run/run/queue?order=entropy&n=1").json()["items"][0]["id"]
    assert by_entropy == pool.sort_values("entropy", ascending=False, kind="stable")["id"].iloc[0]


def test_labels_round_trip_survive_a_restart_and_export(run, tmp_path):
    (run / JOURNAL).unlink(missing_ok=True)
    client = TestClient(create_app([run], thumb_cache=tmp_path / "t", who="ana"))
    saved = []
    for label in (2, 0, 1):
        cur = client.get("/api/run/run/queue").json()["items"][0]["id"]
        r = client.post("/api/run/run/labels", json={"id": cur, "decision": "class", "label": label})
        assert r.status_code == 200 and r.json()["event"]["who"] == "ana"
        assert r.json()["items"][0]["id"] != cur  # the queue moved on
        saved.append((cur, label))
    skipped = client.get("/api/run/run/queue").json()["items"][0]["id"]
    client.post("/api/run/run/labels", json={"id": skipped, "decision": "skip"})
    undone = client.post("/api/run/run/undo", json={}).json()
    assert undone["undone"]["id"] == skipped and undone["items"][0]["id"] == skipped
    assert undone["progress"]["done"] == 3
    restarted = TestClient(create_app([run], thumb_cache=tmp_path / "t"))  # a new process reading the same folder
    assert restarted.get("/api/run/run/queue").json()["progress"]["done"] == 3
    csv = pd.read_csv(pd.io.common.BytesIO(restarted.get("/run/run/expert_labels.csv").content), dtype={"id": str})
    assert list(zip(csv["id"], csv["label"])) == saved and set(csv["who"]) == {"ana"} and csv["when"].notna().all()
    assert restarted.get("/run/run/expert_labels.parquet").status_code == 200
    parquet = pd.read_parquet(run / "expert_labels.parquet")
    assert parquet["id"].tolist() == [i for i, _ in saved] and set(parquet["decision"]) == {"class"}
    assert all(f"/galaxy/{i}" in restarted.get("/run/run/labels").text for i, _ in saved)


def test_a_torn_last_line_loses_only_that_label(run, tmp_path):
    names = json.loads((run / "config.json").read_text())["supervised"]["class_names"]
    store = LabelStore(tmp_path, names)
    store.add("g0001", "class", 1, who="a")
    with open(tmp_path / JOURNAL, "a") as f:
        f.write('{"seq": 2, "event": "label", "id": "g00')  # a crash in the middle of a write
    again = LabelStore(tmp_path, names)
    assert set(again.current()) == {"g0001"}
    again.add("g0002", "not_a_galaxy", who="a")  # starts on a new line: the torn one stays alone
    with pytest.warns(UserWarning, match="line 2 is not a label event"):
        assert set(LabelStore(tmp_path, names).current()) == {"g0001", "g0002"}


def test_bad_labels_and_requests_are_refused_with_a_message(client):
    cur = client.get("/api/run/run/queue").json()["items"][0]["id"]
    cases = [({"id": cur, "decision": "class", "label": 10}, 400, "not a class"),
             ({"id": cur, "decision": "class", "label": -1}, 400, "not a class"),
             ({"id": cur, "decision": "class"}, 400, "not a class"),
             ({"id": cur, "decision": "maybe"}, 400, "unknown decision"),
             ({"id": "no-such-galaxy", "decision": "skip"}, 404, "not in the predictions"),
             ({"decision": "skip"}, 400, "id")]
    for body, status, message in cases:
        r = client.post("/api/run/run/labels", json=body)
        assert r.status_code == status and message in r.json()["error"], (body, r.text)
    r = client.post("/api/run/run/labels", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    assert client.post("/api/run/clus/labels", json={"id": "g0001", "decision": "skip"}).status_code == 404


def test_not_a_run_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalmoError, match="not a run folder"):
        create_app([tmp_path / "empty"])
    assert main(["serve", str(tmp_path / "empty")]) == 2
    assert f"galmo: error: {tmp_path / 'empty'}: not a run folder" in capsys.readouterr().err
    assert main(["finetune", str(tmp_path / "empty"), "--expert-labels", str(tmp_path / "x.parquet"), "--out",
                 str(tmp_path / "r2")]) == 2


def test_serve_binds_loopback_and_warns_for_another_address(run, tmp_path, monkeypatch, capsys):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: calls.append((app, host, port)))
    assert main(["serve", str(run), "--thumb-cache", str(tmp_path)]) == 0
    assert calls[-1][1:] == ("127.0.0.1", 8000) and "warning" not in capsys.readouterr().err
    assert main(["serve", str(run), "--host", "0.0.0.0", "--port", "8123", "--thumb-cache", str(tmp_path)]) == 0
    assert calls[-1][1:] == ("0.0.0.0", 8123) and set(calls[-1][0].state.explorer.runs) == {"run", "run-outliers"}
    assert "galmo: warning: --host 0.0.0.0: the explorer and its labelling are open" in capsys.readouterr().err


# ---------------------------------------------------------------- scale
def test_list_pages_are_paginated_with_100k_galaxies(tmp_path):
    """Every list page of a 100,000-galaxy run answers with one page of cards (their latency is
    measured by benchmarks/bench_web.py, not here)."""
    from web_data import URLS, large_run

    n = 100_000
    client = TestClient(create_app([large_run(tmp_path, n)], thumb_cache=tmp_path / "t"))
    name = tmp_path.name
    first = client.get(f"/run/{name}/predictions")
    assert first.status_code == 200 and first.text.count('class="card"') == PAGE_SIZE
    for u in URLS:
        r = client.get(u.format(name=name))
        assert r.status_code == 200, u
        assert r.text.count('class="card"') <= PAGE_SIZE, u
    assert client.get(f"/run/{name}/predictions?page=2084").text.count('class="card"') == n - PAGE_SIZE * 2083


# ---------------------------------------------------------------- the loop: label, fine-tune, measure
def test_finetune_retrains_on_the_expert_labels_and_measures_the_change(run, tiny, tmp_path):
    (run / JOURNAL).unlink(missing_ok=True)
    client = TestClient(create_app([run], thumb_cache=tmp_path / "t", who="sim"))
    truth = pd.read_parquet(run / "predictions.parquet").set_index("id")["label"]
    for _ in range(12):  # an expert who disagrees with every catalog label: each answer changes one
        cur = client.get("/api/run/run/queue").json()["items"][0]["id"]
        client.post("/api/run/run/labels", json={"id": cur, "decision": "class", "label": int((truth[cur] + 1) % 3)})
    client.get("/run/run/expert_labels.parquet")
    out = tmp_path / "run2"
    assert main(["finetune", str(run), "--expert-labels", str(run / "expert_labels.parquet"), "--data", str(tiny),
                 "--out", str(out), "--epochs", "2", "--lr", "3e-3", *FAST]) == 0
    res = json.loads((out / "finetune.json").read_text())
    assert res["labels"]["used"] == 12 and res["labels"]["changed"] == 12 and res["labels"]["ignored_test"] == 0
    assert res["before"]["n"] == res["after"]["n"] == len(pd.read_csv(run / "test_ids.csv"))
    before = json.loads((run / "metrics.json").read_text())["test"]
    assert res["before"]["top1"] == pytest.approx(before["top1"])
    assert res["change"]["top1"] == pytest.approx(res["after"]["top1"] - res["before"]["top1"])
    trained = pd.read_csv(out / "split.csv", dtype={"id": str})
    assert (trained["split"] == "test").sum() == res["after"]["n"]
    from safetensors.numpy import load_file

    w0, w1 = load_file(run / "model.safetensors"), load_file(out / "model.safetensors")
    assert w0.keys() == w1.keys() and any(not np.array_equal(w0[key], w1[key]) for key in w0)
    p0, p1 = pd.read_parquet(run / "predictions.parquet"), pd.read_parquet(out / "predictions.parquet")
    assert p1["id"].tolist() == p0["id"].tolist() and not np.allclose(p0["confidence"], p1["confidence"])
    assert (p1["label"] == p0["label"]).all()  # the re-ranked queue keeps the catalog's labels
    again = TestClient(create_app([out], thumb_cache=tmp_path / "t"))
    assert again.get("/api/run/run2/queue").json()["progress"]["done"] == 12  # the labels carried over
    page = again.get("/run/run2").text
    assert "Fine-tuned on expert labels" in page and f"{res['after']['top1']:.4g}" in page



# ---------------------------------------------------------------- the embedding map
def test_embedding_map_is_the_pca_of_the_embeddings_cached_beside_them(client, run, clustered, tmp_path):
    from sklearn.decomposition import PCA

    from galmo.methods.embeddings.index import l2_normalise
    from galmo.methods.embeddings.store import read_embeddings
    from galmo.web.emap import map_path

    map_path(run / "embeddings.parquet").unlink(missing_ok=True)
    got = client.get("/api/run/run/map").json()
    emb = read_embeddings(run / "embeddings.parquet")
    assert got["ids"] == emb.ids.tolist() and got["n"] == got["shown"] == len(emb.ids)
    pca = PCA(2).fit(l2_normalise(emb.X.astype(np.float64)))
    assert got["explained"] == pytest.approx(pca.explained_variance_ratio_.tolist(), rel=1e-4)
    ref = pca.transform(l2_normalise(emb.X.astype(np.float64)))
    for axis, k in (("x", 0), ("y", 1)):  # the same axis up to its sign, scaled to the map
        assert abs(np.corrcoef(got[axis], ref[:, k])[0, 1]) > 0.999
    cached = map_path(run / "embeddings.parquet")
    assert cached.is_file() and not list(run.glob(".embeddings.map.parquet.*"))  # written atomically
    stamp = cached.stat().st_mtime_ns
    again = TestClient(create_app([run], thumb_cache=tmp_path / "t")).get("/api/run/run/map").json()
    assert again["x"] == got["x"] and cached.stat().st_mtime_ns == stamp  # read back, not recomputed
    assert "map" not in {p.name for p in run.iterdir() if p.suffix == ".parquet" and "emb" not in p.name}


def test_embedding_map_colours_by_the_groups_classes_and_scores_of_every_run(client, run, clustered):
    options = dict(client.get("/api/run/run/map").json()["options"])
    assert {"label", "group:clus", "predicted:run", "confidence:run", "outlier:run-outliers"} <= set(options)
    got = client.get("/api/run/run/map?colour=group:clus").json()["colour"]
    groups = pd.read_parquet(clustered / "cluster_catalog.parquet").set_index("id")["group"].astype(str).replace(
        "-1", "unclassified")
    ids = client.get("/api/run/run/map").json()["ids"]
    assert got["kind"] == "category" and [got["categories"][v] for v in got["values"]] == groups.loc[ids].tolist()
    score = client.get("/api/run/run/map?colour=outlier:run-outliers").json()["colour"]
    table = pd.read_csv(run / "outliers" / "outliers.csv", dtype={"id": str}).set_index("id")["anomaly_score"]
    assert score["kind"] == "numeric" and score["values"] == pytest.approx(table.loc[ids].tolist(), abs=1e-5)
    page = client.get("/run/run/map").text
    assert "/static/map.js" in page and 'id="map-canvas"' in page and "/run/run/map" in client.get("/run/run").text
    assert client.get("/run/clus/map").status_code == 404


def test_embedding_map_samples_a_large_run(tmp_path, monkeypatch):
    from galmo.methods.embeddings.store import write_embeddings
    from galmo.web import emap

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 8)).astype(np.float32)
    write_embeddings(tmp_path / "e.parquet", [f"e{i}" for i in range(500)], X, {"model": "none"})
    monkeypatch.setattr(emap, "MAP_POINTS", 120)
    monkeypatch.setattr(emap.sample, "__defaults__", (120, 0))
    got = TestClient(create_app([tmp_path], thumb_cache=tmp_path / "t")).get(f"/api/run/{tmp_path.name}/map").json()
    assert got["n"] == 500 and got["shown"] == len(got["ids"]) == len(set(got["ids"])) == 120
    assert min(got["x"]) == 0 and max(max(got["x"]), max(got["y"])) == 1  # one scale for both axes


# ---------------------------------------------------------------- upload
def _fits_bytes(image) -> bytes:
    import io

    from astropy.io import fits

    buf = io.BytesIO()
    fits.PrimaryHDU(image).writeto(buf)
    return buf.getvalue()


def test_an_uploaded_image_is_predicted_and_placed_among_its_neighbours(client, run, tiny):
    from PIL import Image

    from galmo.sources import open_source

    image = open_source(tiny).read([5], kind="image")[0]
    r = client.post("/run/run/upload", files={"file": ("g5.fits", _fits_bytes(image), "application/fits")})
    assert r.status_code == 200
    expected = pd.read_parquet(run / "predictions.parquet").set_index("id").loc["g0005"]
    assert f'id="upload-pred">{expected["pred_name"]}<' in r.text
    shown = float(re.search(r"upload-pred.*?confidence ([0-9.]+)", r.text, re.DOTALL)[1])
    assert shown == pytest.approx(expected["confidence"], abs=2e-3)  # as galmo predict said (batch of 1, FITS round trip)
    found = r.text.split("<h3>nearest neighbours</h3>")[1]
    sims = [float(s) for s in re.findall(r"sim ([0-9.]+)", found)]
    ids = [u.rsplit("/", 1)[1] for u in _links(found) if u.startswith("/galaxy/")]
    from galmo.methods.embeddings.index import index_for, neighbours

    index, emb, _ = index_for(run / "embeddings.parquet")
    same = neighbours(index, emb, "g0005", k=10)  # the neighbours of the galaxy the image was cut from, itself included
    assert len(ids) == 10 and sims == pytest.approx(same["similarity"].tolist(), abs=2e-3)
    above = same[same["similarity"] > same["similarity"].min() + 1e-3]["id"]  # clear of any tie at the 10th
    assert set(above) <= set(ids)
    big = np.kron(np.transpose(image, (1, 2, 0))[..., ::-1], np.ones((2, 2, 1)))  # a 64 px PNG (RGB order)
    png = pd.io.common.BytesIO()
    Image.fromarray((np.clip(big, 0, 1) * 255).astype(np.uint8)).save(png, format="PNG")
    r = client.post("/run/run/upload", files={"file": ("mine.png", png.getvalue(), "image/png")})
    assert r.status_code == 200 and "3 × 64 × 64" in r.text and 'id="upload-pred"' in r.text
    assert "mine.png: files of 64 px resized" in r.text and "galmo-upload-" not in r.text  # said, naming the upload
    raw = client.post("/run/run/upload?filename=g5.fits", content=_fits_bytes(image),
                      headers={"content-type": "application/octet-stream"})
    assert raw.status_code == 200 and f'id="upload-pred">{expected["pred_name"]}<' in raw.text


def test_bad_uploads_are_refused_with_a_message_naming_the_file(client, monkeypatch):
    from galmo.web import upload

    png = b"\x89PNG\r\n\x1a\n"
    cases = [(("notes.txt", b"hello"), 400, "notes.txt: not a PNG, JPEG or FITS image"),
             (("fake.png", b"GIF89a...."), 400, "fake.png: not a PNG image"),
             (("empty.fits", b""), 400, "empty.fits: empty file"),
             (("torn.png", png + b"\0" * 20), 400, "torn.png: not a readable PNG/JPEG image"),
             (("bad.fits", b"SIMPLE  = T" + b" " * 100), 400, "bad.fits")]
    for (name, data), status, message in cases:
        r = client.post("/run/run/upload", files={"file": (name, data, "application/octet-stream")})
        assert r.status_code == status and message in r.text and "Traceback" not in r.text, (name, r.text[-400:])
        assert "/tmp" not in r.text.split('id="upload-error"')[1][:300]  # the temporary copy is not named
    r = client.post("/run/run/upload", data={"other": "x"}, files={"nofile": ("a.png", png, "image/png")})
    assert r.status_code == 400 and "no file in the upload" in r.text
    monkeypatch.setattr(upload, "MAX_UPLOAD", 1000)
    r = client.post("/run/run/upload", files={"file": ("big.png", png + b"\0" * 70_000, "image/png")})
    assert r.status_code == 413 and "larger than" in r.text
    assert client.post("/run/clus/upload", files={"file": ("a.png", png, "image/png")}).status_code == 404
    assert client.get("/run/run/upload").status_code == 200 and client.get("/run/clus/upload").status_code == 404


def test_expert_labels_on_galaxies_train_frac_left_unused_join_the_training(tmp_path):
    from galmo.web.finetune import relabel

    cat = pd.DataFrame({"id": [f"u{i}" for i in range(6)], "label": [0, 1, 2, 0, 1, 2]})
    pd.DataFrame({"id": cat["id"], "split": ["train", "unused", "unused", "val", "test", "unused"]}).to_csv(
        tmp_path / "split.csv", index=False)
    labels = pd.DataFrame({"id": ["u1", "u2", "u4"], "label": [1, 0, 0], "decision": ["class"] * 3})
    new, split, counts = relabel(cat, labels, tmp_path, ["a", "b", "c"])
    assert counts == {"used": 2, "unknown_ids": 0, "ignored_test": 1, "changed": 0, "added": 2, "removed": 0}
    assert dict(zip(split["id"], split["split"])) == {"u0": "train", "u1": "train", "u2": "train", "u3": "val",
                                                      "u4": "test"}  # u5: unused and unlabelled, not trained on
    assert new.set_index("id").loc[["u1", "u2", "u5"], "label"].tolist() == [1, 0, -1]
