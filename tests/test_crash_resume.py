"""Crash-safe training: a real `galmo train` / `galmo pretrain` killed (SIGKILL, SIGTERM) in a child
process and resumed ends with the same weights as an uninterrupted run; the checkpoint set last/ is
always complete; small sources split without a scikit-learn traceback.

The killed runs are children (a kill needs a process); the references and the resumes run in this
process (no second start-up of torch). Everything runs on one torch thread (GALMO_THREADS=1) so the
child's steps and this process's are computed alike, bit for bit.
"""

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

from galmo.cli import main
from galmo.nn import checkpoint as ckpt
from galmo.nn.train import read_progress

TRAIN = ["--model", "simple_cnn", "--width", "4", "--epochs", "3", "--batch-size", "8", "--checkpoint-every", "2",
         "--test-frac", "0", "--device", "cpu", "--no-progress"]
PRETRAIN = ["--method", "astropt", "--epochs", "2", "--batch-size", "8", "--max-images", "40", "--image-size", "16",
            "--checkpoint-every", "2", "--device", "cpu", "--no-progress"]
# the child: `galmo` on one thread, each training step slowed by 50 ms so that a kill lands mid-run
CHILD = ("import sys, time; import galmo.nn.train as t; f = t._train_step; "
         "t._train_step = lambda *a, **k: (time.sleep(float(sys.argv[1])), f(*a, **k))[1]; "
         "from galmo.nn.device import set_threads; set_threads(); "
         "from galmo.cli import main; sys.exit(main(sys.argv[2:]))")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old_env, old_threads = os.environ.get("GALMO_THREADS"), torch.get_num_threads()
    os.environ["GALMO_THREADS"] = "1"
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old_threads)
    if old_env is None:
        os.environ.pop("GALMO_THREADS", None)
    else:
        os.environ["GALMO_THREADS"] = old_env


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    from galmo.simulate import simulate

    return str(simulate(n=80, size=32, seed=0, out=tmp_path_factory.mktemp("sims") / "s.h5", workers=1,
                        progress=False))


@pytest.fixture(scope="module")
def reference(sims, tmp_path_factory):
    """The uninterrupted `galmo train` of the same settings."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", "--data", sims, "--out", str(out), *TRAIN]) == 0
    return out


def _start(verb: str, data: str, out, args, sleep: float = 0.05) -> subprocess.Popen:
    env = {**os.environ, "GALMO_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(sleep), verb, "--data", data, "--out", str(out), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(child: subprocess.Popen, out, past_step: int, timeout: float = 120.0) -> dict:
    """Poll read_progress until last/ holds a checkpoint past ``past_step`` (every read sees a complete one)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        p = read_progress(out)
        if p["global_step"] > past_step:
            return p
        if child.poll() is not None:
            pytest.fail(f"the child ended (rc {child.returncode}) before step {past_step}: {child.stderr.read()}")
        time.sleep(0.01)
    child.kill()
    pytest.fail(f"no checkpoint past step {past_step} within {timeout} s")


def _same_weights(a, b) -> None:
    wa, wb = ckpt.load_state_dict(a), ckpt.load_state_dict(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _log(run) -> list[dict]:
    rows = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "train_images_per_s"} for r in rows]


def test_train_killed_with_sigkill_resumes_to_the_same_weights(sims, reference, tmp_path):
    out = tmp_path / "run"
    child = _start("train", sims, out, TRAIN)
    _wait_for_checkpoint(child, out, past_step=3)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=60)  # closes its pipes
    assert child.returncode == -signal.SIGKILL
    killed = read_progress(out)
    assert not killed["done"] and 4 <= killed["global_step"] < 27  # 9 steps per epoch, 3 epochs
    assert main(["train", "--data", sims, "--out", str(out), *TRAIN, "--resume"]) == 0
    assert read_progress(out)["done"] and read_progress(out)["global_step"] == 27
    _same_weights(out / ckpt.MODEL_FILE, reference / ckpt.MODEL_FILE)          # the best weights
    _same_weights(out / "last" / ckpt.MODEL_FILE, reference / "last" / ckpt.MODEL_FILE)  # the last ones
    assert _log(out) == _log(reference)  # every epoch logged once, with the same numbers
    assert not [p.name for p in out.iterdir() if p.name in (ckpt.LAST_TMP, ckpt.LAST_OLD)]


def test_train_stopped_with_sigterm_saves_then_resumes(sims, reference, tmp_path):
    out = tmp_path / "run"
    child = _start("train", sims, out, TRAIN)
    at = _wait_for_checkpoint(child, out, past_step=3)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err  # interrupted, resumable
    assert "interrupted" in err and "--resume" in err and "stopped by a signal" in err
    stopped = read_progress(out)  # the step it was on was finished and saved
    assert not stopped["done"] and at["global_step"] <= stopped["global_step"] < 27
    assert (out / "last" / ckpt.STATE_FILE).exists()
    assert main(["train", "--data", sims, "--out", str(out), *TRAIN, "--resume"]) == 0
    _same_weights(out / ckpt.MODEL_FILE, reference / ckpt.MODEL_FILE)
    assert _log(out) == _log(reference)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_pretrain_killed_resumes_to_the_same_weights(sims, tmp_path, sig):
    ref = tmp_path / "ref"
    assert main(["pretrain", "--data", sims, "--out", str(ref), *PRETRAIN]) == 0
    out = tmp_path / "run"
    child = _start("pretrain", sims, out, PRETRAIN, sleep=0.0)  # a step takes ~0.3 s on its own
    _wait_for_checkpoint(child, out, past_step=1)
    os.kill(child.pid, sig)
    _, err = child.communicate(timeout=60)  # closes its pipes
    if sig == signal.SIGKILL:
        assert child.returncode == -signal.SIGKILL
    else:  # the step is finished and saved, then galmo says how to go on
        assert child.returncode == 130 and "stopped by a signal" in err and "--resume" in err, err
    killed = read_progress(out)
    assert not killed["done"] and 2 <= killed["global_step"] < 10
    assert main(["pretrain", "--data", sims, "--out", str(out), *PRETRAIN, "--resume"]) == 0
    assert read_progress(out)["global_step"] == 10
    _same_weights(out / ckpt.MODEL_FILE, ref / ckpt.MODEL_FILE)
    assert _log(out) == _log(ref)


def _fake_checkpoint(folder, step: int) -> None:
    folder.mkdir(parents=True)
    (folder / ckpt.STATE_JSON).write_text(json.dumps({"scalars": {"global_step": step, "epoch": 0}}))


def test_a_kill_at_any_point_of_a_save_leaves_a_complete_checkpoint(tmp_path):
    """The states a save can be killed in: last.tmp/ half-written (last/ is the previous checkpoint),
    and the instant between the two renames (last.old/ and last.tmp/, no last/); then the next save."""
    _fake_checkpoint(tmp_path / "last", 4)
    (tmp_path / "last.tmp").mkdir()
    (tmp_path / "last.tmp" / ckpt.MODEL_FILE).write_bytes(b"half")
    assert read_progress(tmp_path)["global_step"] == 4
    (tmp_path / "last").rename(tmp_path / "last.old")
    ckpt.shutil.rmtree(tmp_path / "last.tmp")
    _fake_checkpoint(tmp_path / "last.tmp", 6)
    assert read_progress(tmp_path)["global_step"] == 4  # the previous complete checkpoint, last.old/
    assert ckpt.recover_resumable(tmp_path) == tmp_path / "last"
    assert [p.name for p in tmp_path.iterdir()] == ["last"]
    assert read_progress(tmp_path)["global_step"] == 4
    ckpt.save_resumable(tmp_path, lambda d: (d / ckpt.STATE_JSON).write_text(
        json.dumps({"scalars": {"global_step": 8}})))
    assert read_progress(tmp_path)["global_step"] == 8
    assert [p.name for p in tmp_path.iterdir()] == ["last"]


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_again(sims, reference, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", sims, "--out", str(out), *TRAIN, "--stop-after-steps", "3"]) == 130
    ckpt.shutil.rmtree(out / "last")  # as if killed before the first save
    (out / "metrics.jsonl").unlink(missing_ok=True)
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["train", "--data", sims, "--out", str(out), *TRAIN, "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"galmo: warning: {out}: no checkpoint yet" in err and "starts again from step 0" in err, err
    _same_weights(out / ckpt.MODEL_FILE, reference / ckpt.MODEL_FILE)


def test_a_small_source_trains_with_an_unstratified_split(tmp_path, capsys):
    """64 galaxies in 10 classes: 7 left for validation cannot hold every class (was a scikit-learn
    traceback: "test_size = 7 should be greater or equal to the number of classes = 10")."""
    from galmo.methods.supervised.run import split_rows
    from galmo.simulate import simulate

    data = str(simulate(n=64, size=32, seed=1, out=tmp_path / "small.h5", workers=1, progress=False))
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        rc = main(["train", "--data", data, "--out", str(tmp_path / "run"), "--model", "simple_cnn", "--width", "4",
                   "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"galmo: warning: {data}: 51 galaxies in 10 classes are too few for a stratified validation split " \
           "of 7" in err, err
    split = __import__("pandas").read_csv(tmp_path / "run" / "split.csv")["split"].value_counts().to_dict()
    assert split == {"train": 44, "val": 7, "test": 13}
    y = np.repeat(np.arange(10), 10)  # 100 galaxies, 10 per class: stratified as before, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tr, va, te = split_rows(y, 100, 0.1, 0.2, seed=0)
    assert np.bincount(y[te]).tolist() == [2] * 10 and np.bincount(y[va]).tolist() == [1] * 10
    assert len(np.unique(np.concatenate([tr, va, te]))) == 100
