"""``--engine ray``: embed and predict over shards on a local Ray cluster give the local path's rows, and
cluster (fitted on the driver, assigned by the actors) the local path's groups; a run killed by its
process id resumes without recomputing a finished shard or writing an id twice; a corrupt shard is
reported by name (``--on-error skip``: listed in rejected.csv).

One local cluster (``ray.init(num_cpus=2)``) serves every Ray test of the module; the planning tests
(shards, output names, the run's record) and the message without Ray need no Ray. Tiny data: 48
galaxies of 32 px, a 4-channel simple CNN trained for one epoch, shards of 16.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import pytest

from galmo.cli import main
from galmo.core.errors import GalmoError
from galmo.distributed.shards import list_shards, read_shards, written
from supervised_data import make_tiny_source

CPU = ["--device", "cpu", "--backend", "torch", "--no-progress"]
RAY = ["--engine", "ray", "--concurrency", "2"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in the child (the cores are shared; the actors take one each)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GALMO_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(the whole source, a folder of its three HDF5 shards)."""
    d = tmp_path_factory.mktemp("sharded")
    full = make_tiny_source(d / "full.h5", n=48, size=32)
    (d / "full.truth.parquet").unlink()
    folder = d / "shards"
    split_h5(full, folder, [(0, 16), (16, 32), (32, 48)])
    return full, folder


def split_h5(full, folder, ranges, prefix="part"):
    """HDF5 shards of ``full``: every dataset sliced by each range, the attributes copied."""
    folder.mkdir(exist_ok=True)
    with h5py.File(full) as f:
        for k, (a, b) in enumerate(ranges):
            with h5py.File(folder / f"{prefix}{k:02d}.h5", "w") as g:
                for key in f:
                    g[key] = f[key][a:b]
                g.attrs.update(f.attrs)
    return folder


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "cnn"
    assert main(["train", "--data", str(data[0]), "--out", str(out), "--model", "simple_cnn", "--width", "4",
                 "--epochs", "1", "--batch-size", "16", "--test-frac", "0", "--seed", "0", "--device", "cpu",
                 "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def cluster():
    """The module's one local Ray cluster; its address, for the CLI runs in child processes."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")  # a new one, ours
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _by_id(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("id").reset_index(drop=True)


def _same_rows(local: pd.DataFrame, sharded: pd.DataFrame, atol: float = 1e-6) -> None:
    a, b = _by_id(local), _by_id(sharded)
    assert list(a.columns) == list(b.columns)
    assert a["id"].tolist() == b["id"].tolist() and b["id"].is_unique
    num = [c for c in a.columns if pd.api.types.is_float_dtype(a[c])]
    np.testing.assert_allclose(b[num].to_numpy(), a[num].to_numpy(), rtol=1e-5, atol=atol)
    other = [c for c in a.columns if c not in num]
    pd.testing.assert_frame_equal(b[other], a[other])


# ---------------------------------------------------------------- planning (no Ray needed)
def test_shards_have_deterministic_names_by_kind_of_source(data, tmp_path):
    full, folder = data
    shards, _ = list_shards(folder)
    assert [s.name for s in shards] == ["part00", "part01", "part02"] and shards[1].path == str(folder / "part01.h5")
    rows, _ = list_shards(full, shard_size=20)
    assert [(s.name, s.start, s.stop) for s in rows] == [("full-00000", 0, 20), ("full-00001", 20, 40),
                                                         ("full-00002", 40, 48)]
    cat = tmp_path / "cat.csv"  # a FITS folder split by a catalog's 'shard' column
    from astropy.io import fits

    for i in range(4):
        fits.PrimaryHDU(np.full((8, 8), i, np.float32)).writeto(tmp_path / f"g{i}.fits")
    pd.DataFrame({"id": [f"g{i}" for i in range(4)], "path": [f"g{i}.fits" for i in range(4)],
                  "shard": ["b", "a", "b", "a/x"]}).to_csv(cat, index=False)
    keyed, _ = list_shards(cat)
    assert [(s.name, s.key) for s in keyed] == [("cat-a", "a"), ("cat-a_x", "a/x"), ("cat-b", "b")]
    with pytest.raises(GalmoError, match="no such file"):
        list_shards(tmp_path / "missing")


def test_planning_skips_finished_shards_removes_temporaries_and_refuses_strays(data, tmp_path, capsys):
    from galmo.distributed.config import EngineConfig
    from galmo.distributed.engine import prepare
    from galmo.methods.embeddings.config import EmbedConfig

    out = tmp_path / "emb"
    cfg, eng = EmbedConfig(data=str(data[1]), out=str(out)), EngineConfig(engine="ray")
    _, shards, todo, _ = prepare("embed", cfg, eng, log=print)
    assert [s.name for s in todo] == ["part00", "part01", "part02"] and (out / "_galmo.json").is_file()
    pd.DataFrame({"id": ["g0000"]}).to_parquet(out / "part01.parquet")  # finished by an earlier run
    (out / ".part02.parquet.abc123.tmp.parquet").write_bytes(b"half")  # in flight when it was killed
    _, _, todo, _ = prepare("embed", cfg, eng, log=print)
    assert [s.name for s in todo] == ["part00", "part02"] and "1 of 3 shards already in" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp.*"))
    with pytest.raises(GalmoError, match="encoder differ"):
        prepare("embed", cfg.replace(encoder="resnet18"), eng)
    prepare("embed", cfg, eng.replace(shard_size=5))  # shards of files: the shard size plays no part
    rows = cfg.replace(data=str(data[0]), out=str(tmp_path / "rows"))
    assert len(prepare("embed", rows, eng.replace(shard_size=20))[2]) == 3
    with pytest.raises(GalmoError, match="shard_size differ"):  # other rows in each shard
        prepare("embed", rows, eng.replace(shard_size=5))
    pd.DataFrame({"id": ["x"]}).to_parquet(out / "other.parquet")
    with pytest.raises(GalmoError, match="not shards of --data .e.g. other.parquet"):
        prepare("embed", cfg, eng)
    (tmp_path / "file").write_text("x")  # --engine ray writes a folder: a file there is refused first
    assert main(["embed", "--data", str(data[1]), "--out", str(tmp_path / "file"), "--engine", "ray"]) == 2
    assert "is a file, but a folder is needed" in capsys.readouterr().err


def test_without_ray_engine_ray_says_how_to_install_it(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    assert main(["embed", "--data", str(data[1]), "--out", str(tmp_path / "emb"), "--engine", "ray"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "galmo[ray]"' in err and "Traceback" not in err
    assert not (tmp_path / "emb" / "_galmo.json").exists()


# ---------------------------------------------------------------- the Ray path
def test_ray_embed_and_predict_match_the_local_path(cluster, data, run, tmp_path, capsys):
    full, folder = data
    assert main(["embed", "--encoder", str(run), "--data", str(full), "--out", str(tmp_path / "e.parquet"), *CPU]) == 0
    assert main(["embed", "--encoder", str(run), "--data", str(folder), "--out", str(tmp_path / "e"), *CPU, *RAY]) == 0
    assert [p.name for p in written(tmp_path / "e")] == ["part00.parquet", "part01.parquet", "part02.parquet"]
    _same_rows(pd.read_parquet(tmp_path / "e.parquet"), read_shards(tmp_path / "e"))
    assert main(["predict", "--run", str(run), "--data", str(full), "--out", str(tmp_path / "p.parquet"), *CPU]) == 0
    # one source split into row shards (--shard-size) rather than a folder of shards
    assert main(["predict", "--run", str(run), "--data", str(full), "--out", str(tmp_path / "p"), "--shard-size", "20",
                 *CPU, *RAY]) == 0
    assert [p.stem for p in written(tmp_path / "p")] == ["full-00000", "full-00001", "full-00002"]
    _same_rows(pd.read_parquet(tmp_path / "p.parquet"), read_shards(tmp_path / "p"))
    assert "wrote 3 of 3 shards" in capsys.readouterr().out
    # the same --out with other settings is refused rather than mixed
    assert main(["predict", "--run", str(run), "--data", str(full), "--out", str(tmp_path / "p"), "--tta", "2",
                 *CPU, *RAY]) == 2
    assert "tta" in capsys.readouterr().err


def _stat(path):
    s = path.stat()
    return s.st_ino, s.st_mtime_ns


def _settled(out, quiet: float = 2.0) -> dict:
    """The written shards once none has appeared for ``quiet`` s (an actor of the killed run may still
    finish the shard it holds before Ray ends it): name → (inode, mtime)."""
    seen, t = None, time.monotonic()
    while True:
        now = {p.name: _stat(p) for p in written(out)}
        if now != seen:
            seen, t = now, time.monotonic()
        elif time.monotonic() - t >= quiet:
            return seen
        time.sleep(0.1)


def test_a_killed_run_resumes_without_recomputing_or_duplicating(cluster, tmp_path, capsys):
    """The CLI in a child process on the module's cluster (--address), killed (SIGKILL, by its process
    id) once a shard is written; the rerun skips every shard written by then and adds each id once."""
    full = make_tiny_source(tmp_path / "full.h5", n=128, size=32, seed=1)
    folder = split_h5(full, tmp_path / "many", [(s, s + 8) for s in range(0, 128, 8)], prefix="s")  # 16 shards
    out = tmp_path / "emb"
    args = ["embed", "--data", str(folder), "--out", str(out), "--encoder", "tf_efficientnet_lite0",
            "--weights", "none", "--image-size", "96", "--batch-size", "4", *CPU, "--engine", "ray",
            "--concurrency", "1"]
    child = subprocess.Popen([sys.executable, "-m", "galmo", *args, "--address", cluster],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not written(out):
        if child.poll() is not None:
            pytest.fail(f"the child ended (rc {child.returncode}) before writing a shard: {child.stderr.read()}")
        if time.monotonic() - t0 > 120:
            child.kill()
            pytest.fail("no shard written within 120 s")
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    before = _settled(out)
    assert 1 <= len(before) < 16, sorted(before)
    capsys.readouterr()
    assert main(args) == 0
    assert f"{len(before)} of 16 shards already in" in capsys.readouterr().out
    assert {name: _stat(out / name) for name in before} == before  # not rewritten
    assert not list(out.glob(".*.tmp.*"))  # no temporary file of the killed run left
    ids = read_shards(out)["id"]
    assert len(ids) == 128 and ids.is_unique and set(ids) == {f"g{i:04d}" for i in range(128)}


def test_a_corrupt_shard_is_named_and_with_skip_listed(cluster, data, run, tmp_path, capsys):
    full, folder = data
    bad = tmp_path / "shards"
    split_h5(full, bad, [(0, 16), (16, 32)])
    (bad / "part99.h5").write_bytes(b"\x89HDF not really" * 50)
    out = tmp_path / "p"
    base = ["predict", "--run", str(run), "--data", str(bad), "--out", str(out), *CPU, *RAY]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert f"galmo: error: {bad / 'part99.h5'}: not an HDF5 file" in err and "Traceback" not in err
    assert main([*base, "--on-error", "skip"]) == 0
    rejected = pd.read_csv(out / "rejected.csv")
    assert rejected["ref"].tolist() == [str(bad / "part99.h5")] and "HDF5" in rejected["reason"].iat[0]
    assert [p.name for p in written(out)] == ["part00.parquet", "part01.parquet"]
    assert len(read_shards(out)) == 32


# ---------------------------------------------------------------- galmo cluster --engine ray
TINY_CLUSTER = ["--k", "3", "4", "--image-size", "32", "--views", "2", "--fit-max", "24", "--views-max-fit", "24",
                "--invariant-components", "8", "--graph-components", "3", "--graph-neighbors", "6",
                "--morph-per-group", "0"]


def test_ray_cluster_assigns_every_galaxy_as_the_local_path(cluster, data, tmp_path, capsys):
    """Fitted on the same 24 of the 48 galaxies (the shards end to end: the local path's sample), saved
    without pickle, the other 24 assigned by the actors: the local catalog's ids, groups and votes; a
    rerun writes only the missing shard and reuses the fitted pipeline (not for other shards)."""
    from galmo.distributed.fitted import load_fitted

    full, folder = data[0], shutil.copytree(data[1], tmp_path / "shards")
    assert main(["cluster", "--data", str(full), "--out", str(tmp_path / "local"), *TINY_CLUSTER, *CPU]) == 0
    run = tmp_path / "ray"
    args = ["cluster", "--data", str(folder), "--out", str(run), *TINY_CLUSTER, *CPU, "--engine", "ray",
            "--concurrency", "1"]  # one actor: each loads torch and the encoder (seconds on 2 shared cores)
    assert main(args) == 0
    assert "fitted on 24 galaxies of 3 shards" in capsys.readouterr().out
    shards = run / "cluster_catalog"
    assert [p.name for p in written(shards)] == ["part00.parquet", "part01.parquet", "part02.parquet"]
    local = pd.read_parquet(tmp_path / "local" / "cluster_catalog.parquet")
    _same_rows(local, read_shards(shards), atol=1e-4)  # the encoder's float32 sums differ by batch
    assert sorted(p.name for p in run.glob("fitted.*")) == ["fitted.json", "fitted.npz"]
    pipe, fit = load_fitted(run)
    assert list(pipe.named_steps) == ["denoise", "invariant", "graph", "cluster"]
    assert fit["shards"] == ["part00", "part01", "part02"] and len(fit["fit_row"]) == 24
    kept = {p.name: _stat(p) for p in written(shards) if p.stem != "part01"}
    (shards / "part01.parquet").unlink()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 of 3 shards already in" in out and "reused" in out and "fitted on" not in out
    assert {name: _stat(shards / name) for name in kept} == kept
    _same_rows(local, read_shards(shards), atol=1e-4)
    shutil.copy(folder / "part00.h5", folder / "part03.h5")  # a shard the sample was not drawn from
    assert main(args) == 2
    assert "fitted on a sample of 3 other shards than the 4 of --data" in capsys.readouterr().err
    (run / "fitted.json").write_text((run / "fitted.json").read_text().replace('"Pipeline"', '"os.system"'))
    with pytest.raises(GalmoError, match="unknown object 'os.system'"):  # only galmo's stages are ever made
        load_fitted(run)
    assert main([*args[:4], str(tmp_path / "d"), *args[5:], "--denoise"]) == 2
    assert "--denoise is not available with --engine ray" in capsys.readouterr().err
