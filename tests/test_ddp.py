"""Distributed data parallel on the CPU: two gloo processes under torchrun stay in sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from test_trainer import make_tiny_workdir

DRIVER = textwrap.dedent("""
    import os, sys
    from safetensors.torch import save_file
    from unetkit.training import trainer
    from unetkit.training.trainer import train

    work, dump = sys.argv[1], sys.argv[2]
    build_network = trainer.build_network

    def build_and_keep_initial_weights(spec):
        # The trainer builds the network it trains through this function (and once on the meta
        # device to check the keywords): keep a copy of the real one's freshly initialised weights.
        network = build_network(spec)
        if not any(p.is_meta for p in network.parameters()):
            rank = int(os.environ["RANK"])
            save_file({k: v.detach().clone().contiguous() for k, v in network.state_dict().items()},
                      os.path.join(dump, f"initial{rank}.safetensors"))
        return network

    trainer.build_network = build_and_keep_initial_weights
    overrides = {"epochs": 2, "iterations_per_epoch": 2, "val_iterations": 1, "num_workers": 0,
                 "device": "cpu", "batch_dice": True}
    result = train(work, "Tiny", "3d_fullres", 0, overrides, echo=False)
    rank = int(os.environ["RANK"])
    save_file({k: v.contiguous() for k, v in result.network.state_dict().items()},
              os.path.join(dump, f"rank{rank}.safetensors"))
""")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_two_cpu_processes_stay_in_sync(tmp_path):
    from safetensors.torch import load_file

    work = make_tiny_workdir(tmp_path, num_cases=6, batch=2)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(driver), str(work), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # Training changed the weights (the check is not vacuous): every parameter tensor moved away
    # from where training started, except the bias of the lowest-resolution deep-supervision head
    # (decoder.heads.0): its loss weight is 0 as in nnU-Net, so it gets no gradient, and weight
    # decay leaves its zero-initialised bias at zero (its weight only decays).
    initial = load_file(str(tmp_path / "initial0.safetensors"))
    assert initial.keys() == w0.keys()
    unchanged = [k for k in w0 if torch.equal(initial[k], w0[k])]
    assert unchanged == ["decoder.heads.0.bias"], f"parameters left at their initial values: {unchanged}"
    assert not initial["decoder.heads.0.bias"].any()
    out = work / "Tiny" / "models" / "3d_fullres__plain_unet" / "fold_0"
    ck = json.loads((out / "checkpoint_final.json").read_text())
    assert ck["world_size"] == 2 and ck["epoch"] == 2
    # Only rank 0 wrote: one log line per epoch, no second set of files.
    log = (out / "train.log").read_text()
    assert log.count("epoch 2/2") == 1
    assert "per process [1, 1]" in log
    assert "differ by at most 0" in log


def _record_dist_calls(monkeypatch) -> list[str]:
    """Replace torch.distributed's group calls by recorders (no group is really joined)."""
    import torch.distributed as dist

    calls: list[str] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: "destroy" not in calls)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    return calls


def test_shutdown_waits_for_peers_only_after_a_normal_end(monkeypatch):
    # A normal end: every process reaches shutdown, so all meet at a barrier before any tears
    # the group down (without it, rank 1 aborted at exit in 4 of 28 loaded runs:
    # benchmarks/ddp_exit_stress.py). After an error a failed peer never arrives: no barrier.
    from unetkit.training.distributed import DistContext, shutdown

    ctx = DistContext(rank=1, world_size=2)
    calls = _record_dist_calls(monkeypatch)
    shutdown(ctx)
    assert calls == ["barrier", "destroy"]
    calls = _record_dist_calls(monkeypatch)
    shutdown(ctx, peers_done=False)
    assert calls == ["destroy"]


def test_train_skips_the_barrier_when_the_run_fails(monkeypatch):
    from unetkit.training import trainer
    from unetkit.training.distributed import DistContext

    seen = []
    monkeypatch.setattr(trainer, "init_distributed", lambda device: DistContext(rank=0, world_size=2))
    monkeypatch.setattr(trainer, "shutdown", lambda ctx, peers_done=True: seen.append(peers_done))

    def failing_train(*args):
        raise trainer.TrainingError("boom")

    monkeypatch.setattr(trainer, "_train", failing_train)
    with pytest.raises(trainer.TrainingError, match="boom"):
        trainer.train(None, "X", "3d_fullres", 0)
    assert seen == [False]
    monkeypatch.setattr(trainer, "_train", lambda *args: "result")
    assert trainer.train(None, "X", "3d_fullres", 0) == "result"
    assert seen == [False, True]
