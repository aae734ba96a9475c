"""Replacing a folder survives a kill; two processes on one work folder do not corrupt each other;
a full disk leaves the previous outputs as they were and names the file.

Kills are real: a child process SIGKILLs itself at the chosen step (no ``finally`` runs), and the
"next command" is a fresh call in this process.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from unetkit.data.errors import DataError
from unetkit.data.synthetic import write_raw_dataset

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


# ----------------------------------------------------------------------------- folder replacement

@pytest.mark.parametrize("kill_at_rename", [2, 3])
def test_replacing_a_dataset_folder_killed_between_the_renames_is_finished_by_the_next_command(
        tmp_path, kill_at_rename, capsys) -> None:
    from unetkit.data.dataset import load_dataset

    old = write_raw_dataset(tmp_path / "DS", num_cases=2, ndim=2, num_classes=1, shape_range=(20, 24))
    # The child replaces DS with a 3-case dataset; os.replace call 1 writes the journal, call 2
    # moves the old folder aside, call 3 moves the new one in. It is killed just before call N.
    child = _python(f"""
        import os, signal
        from pathlib import Path
        from unetkit.data.synthetic import write_raw_dataset
        from unetkit.utils import atomic
        calls = [0]
        real = os.replace
        def replace(a, b):
            calls[0] += 1
            if calls[0] == {kill_at_rename}:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(a, b)
        with atomic.atomic_directory({str(old)!r}, overwrite=True) as tmp:
            write_raw_dataset(tmp, num_cases=3, ndim=2, num_classes=1, shape_range=(20, 24), seed=5)
            atomic.os.replace = replace
    """)
    child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL
    if kill_at_rename == 3:
        assert not old.exists()  # the state a kill between the two renames leaves

    dataset = load_dataset(old)  # the next command
    assert len(dataset.training_cases()) == 3  # the replacement was finished
    assert "finished replacing" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DS"]  # no journal, no .old, no temporary


def test_a_leftover_old_copy_without_journal_is_restored(tmp_path, capsys) -> None:
    from unetkit.data.dataset import load_dataset

    ds = write_raw_dataset(tmp_path / "DS", num_cases=2, ndim=2, num_classes=1, shape_range=(20, 24))
    os.replace(ds, tmp_path / ".tmp-DS.old")  # what the earlier two-rename code left after a kill
    assert len(load_dataset(ds).training_cases()) == 2
    assert "restored the previous" in capsys.readouterr().err


# ----------------------------------------------------------------------------- two processes

def _hold_lock(folder: Path, command: str) -> subprocess.Popen:
    child = _python(f"""
        import sys, time
        from unetkit.utils.locks import folder_lock
        with folder_lock({str(folder)!r}, {command!r}):
            print("locked", flush=True)
            time.sleep(120)
    """)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_second_preprocess_on_one_work_folder_stops_and_leaves_the_first_ones_files(tmp_path) -> None:
    from unetkit.planning import plan_dataset
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.utils.locks import FolderLockedError

    raw = write_raw_dataset(tmp_path / "DS", num_cases=3, ndim=2, num_classes=1, shape_range=(20, 24))
    work = tmp_path / "work"
    plan_dataset(raw, work, num_processes=1)
    cache = work / "DS" / "preprocessed" / "2d"
    cache.mkdir(parents=True)
    in_flight = cache / ".tmp-case_000.npy.abc123.npy"  # a file the first process is writing
    in_flight.write_bytes(b"partial")
    holder = _hold_lock(work / "DS", "unetkit preprocess")
    try:
        with pytest.raises(FolderLockedError) as info:
            preprocess_dataset(raw, work, num_processes=1, progress=False)
        message = str(info.value)
        assert f"process {holder.pid}" in message and "unetkit preprocess" in message and str(work / "DS") in message
        assert in_flight.read_bytes() == b"partial"
        with pytest.raises(FolderLockedError):
            plan_dataset(raw, work, num_processes=1)
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: the next command takes the lock over and says so.
    notes: list[str] = []
    from unetkit.utils.locks import folder_lock

    with folder_lock(work / "DS", "test", say=notes.append):
        pass
    assert notes and f"process {holder.pid}" in notes[0] and "taking over" in notes[0]
    summary = preprocess_dataset(raw, work, num_processes=1, progress=False)
    assert summary.processed["2d"] == 3


def test_second_training_of_one_fold_stops(tmp_path) -> None:
    from unetkit.planning import plan_dataset
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.training.trainer import train

    raw = write_raw_dataset(tmp_path / "DS", num_cases=5, ndim=2, num_classes=1, shape_range=(20, 24))
    work = tmp_path / "work"
    plan_dataset(raw, work, num_processes=1)
    preprocess_dataset(raw, work, num_processes=1, progress=False)
    holder = _hold_lock(work / "DS" / "models" / "2d__plain_unet" / "fold_0", "unetkit train")
    try:
        with pytest.raises(DataError, match=f"process {holder.pid} \\(unetkit train\\)"):
            train(work, raw, "2d", 0, {"epochs": 1, "iterations_per_epoch": 1, "val_iterations": 1,
                                       "num_workers": 0, "batch_size": 2, "device": "cpu"}, echo=False)
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- full disk

def test_full_disk_keeps_the_previous_file_and_names_it(tmp_path, monkeypatch) -> None:
    from unetkit.utils import atomic

    target = tmp_path / "plans.json"
    atomic.atomic_write_json(target, {"version": 1})

    def no_space(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", no_space)
    with pytest.raises(OSError) as info:
        atomic.atomic_write_json(target, {"version": 2})
    assert info.value.errno == errno.ENOSPC and str(target) in str(info.value)
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plans.json"]


def test_full_disk_during_preprocess_names_the_file_and_keeps_other_cases(tmp_path, monkeypatch) -> None:
    from unetkit.planning import plan_dataset
    from unetkit.preprocessing import cache as cache_module
    from unetkit.preprocessing import preprocess_dataset

    raw = write_raw_dataset(tmp_path / "DS", num_cases=3, ndim=2, num_classes=1, shape_range=(20, 24))
    work = tmp_path / "work"
    plan_dataset(raw, work, num_processes=1)
    preprocess_dataset(raw, work, num_processes=1, progress=False)
    folder = work / "DS" / "preprocessed" / "2d"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    time.sleep(0.01)
    label_path = raw / "labelsTr" / "case_001.png"
    label_path.write_bytes(label_path.read_bytes())  # same content, new mtime: the case is redone
    os.utime(label_path, ns=(time.time_ns(), time.time_ns() + 10_000_000))

    real_save = np.save

    def save(handle, array, allow_pickle=False):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.np, "save", save)
    with pytest.raises(DataError) as info:
        preprocess_dataset(raw, work, num_processes=1, progress=False)
    monkeypatch.setattr(cache_module.np, "save", real_save)
    assert str(folder / "case_001.npy") in str(info.value) and "case_001" in str(info.value)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    # The arrays of every case are the previous ones; no temporary is left; only the changed
    # case's marker is gone (so that it is redone), the others are untouched.
    assert {k: v for k, v in after.items() if k != "case_001.json"} == \
        {k: v for k, v in before.items() if k != "case_001.json"}
    assert "case_001.json" not in after
    again = preprocess_dataset(raw, work, num_processes=1, progress=False)
    assert again.processed["2d"] == 1


# ----------------------------------------------------------------------------- remaining plain writes

def test_demo_suite_survives_a_path_with_yaml_syntax(tmp_path) -> None:
    from unetkit.benchmark.suite import load_suite
    from unetkit.cli.demo_cmd import demo_suite_text

    raw = tmp_path / "data: v2 #final" / "DemoBlobs"
    raw.mkdir(parents=True)
    suite = tmp_path / "demo_suite.yaml"
    suite.write_text(demo_suite_text(raw, 6, 3), encoding="utf-8")
    loaded = load_suite(suite)
    assert loaded.datasets["DemoBlobs"].raw == raw
    assert loaded.training["iterations_per_epoch"] == 6 and loaded.training["seed"] == 3


def test_profile_json_replaces_the_file_instead_of_rewriting_it(tmp_path) -> None:
    from unetkit.cli import main

    out = tmp_path / "profile.json"
    out.write_text("previous\n")
    inode = out.stat().st_ino
    assert main(["profile", "plain_unet", "--patch", "64", "64", "--repeats", "1", "--warmup", "0",
                 "--device", "cpu", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["name"] == "plain_unet"
    # A new file renamed into place (what atomic writes do); writing in place keeps the inode and
    # leaves a truncated file to any reader while it runs.
    assert out.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.json"]


def test_demo_output_folder_is_ignored_by_git() -> None:
    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "check-ignore", "-q", "unetkit_demo/work/plans.json"], cwd=repo)
    assert result.returncode == 0, "unetkit demo's default output folder would show up as untracked files"


# ----------------------------------------------------------------------------- bench workers

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_bench_worker_dies_with_its_killed_driver() -> None:
    """A worker runs in its own session (for timeouts); SIGKILL of the driver must not orphan it."""
    driver = _python("""
        import subprocess, sys, time
        from unetkit.benchmark.runner import _die_with_parent
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                  start_new_session=True, preexec_fn=_die_with_parent)
        print(worker.pid, flush=True)
        time.sleep(60)
    """)
    worker_pid = int(driver.stdout.readline())
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{worker_pid}/stat") as handle:
                if handle.read().split(") ")[1].startswith("Z"):
                    break  # killed, waiting for init to reap it
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(worker_pid, signal.SIGKILL)
        pytest.fail("the worker kept running after its driver was killed")
