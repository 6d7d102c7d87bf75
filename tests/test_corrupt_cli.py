"""`tta corrupt`: bad arguments fail with one line before any work, subsets, reruns that say what they skip,
and pool workers that die with the command."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tta.cli.main import cli


@pytest.fixture()
def src(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "test_images.npy", rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8))
    np.save(tmp_path / "test_labels.npy", (np.arange(30) % 10).astype(np.int64))
    return tmp_path / "test_images.npy"


def _corrupt(*args):
    return CliRunner().invoke(cli, ["corrupt", *map(str, args)])


def _one_error(result, match):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("Error: ") and match in lines[-1], result.output
    assert "Traceback" not in result.output


def test_chunk_size_zero_is_refused_before_any_file_is_written(src, tmp_path):
    out = tmp_path / "out"
    _one_error(_corrupt("--data-dir", src, "--output", out, "--chunk-size", "0"), "--chunk-size must be >= 1")
    assert not out.exists()


def test_a_text_file_as_src_is_named_as_such(tmp_path):
    fake = tmp_path / "images.npy"
    fake.write_text("not an array\n")
    result = _corrupt("--data-dir", fake, "--output", tmp_path / "out")
    _one_error(result, "is not a NumPy array file")
    assert "pickle" not in result.output
    _one_error(_corrupt("--data-dir", tmp_path / "notes.txt", "--output", tmp_path / "out"), "does not exist")


def test_an_unwritable_out_is_refused_before_any_work(src, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _one_error(_corrupt("--data-dir", src, "--output", blocker / "sub", "--domains", "gaussian_noise"), "cannot write to --output")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused(src, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _one_error(_corrupt("--data-dir", src, "--output", ro / "c", "--domains", "gaussian_noise"), "cannot write to --output")
    finally:
        ro.chmod(0o755)


def test_n_images_writes_the_same_rows_as_a_full_run_and_a_rerun_says_what_it_skips(src, tmp_path):
    common = ["--data-dir", src, "--domains", "gaussian_noise", "--severities", "1,3", "--chunk-size", "7"]
    assert _corrupt(*common, "--output", tmp_path / "full").exit_code == 0
    assert _corrupt(*common, "--output", tmp_path / "sub", "--n-examples", "10").exit_code == 0
    full = np.load(tmp_path / "full" / "gaussian_noise.npy")
    sub = np.load(tmp_path / "sub" / "gaussian_noise.npy")
    assert sub.shape == (20, 32, 32, 3)
    assert np.array_equal(sub[:10], full[:10]) and np.array_equal(sub[10:], full[30:40])
    assert np.load(tmp_path / "sub" / "labels.npy").tolist() == [i % 10 for i in range(10)] * 2
    again = _corrupt(*common, "--output", tmp_path / "sub", "--n-examples", "10")
    assert again.exit_code == 0 and "skipping" in again.output and "gaussian_noise.npy: already written" in again.output


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_pool_workers_die_with_the_command(tmp_path, signum):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "test_images.npy", rng.integers(0, 256, (4000, 32, 32, 3), dtype=np.uint8))
    np.save(tmp_path / "test_labels.npy", (np.arange(4000) % 10).astype(np.int64))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tta", "corrupt", "--data-dir", str(tmp_path / "test_images.npy"),
                             "--output", str(tmp_path / "out"), "--domains", "glass_blur", "--chunk-size", "20",
                             "--jobs", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(workers) < 2 and proc.poll() is None:
            time.sleep(0.5)
            workers = _children(proc.pid)
        assert len(workers) >= 2, "the pool never started"
        time.sleep(1.0)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)], "workers outlived the command"
        if signum == signal.SIGTERM:
            assert proc.returncode == 130 and b"rerun the same command to continue" in err
    finally:
        for w in workers:  # never leave them behind, even when the test fails
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
