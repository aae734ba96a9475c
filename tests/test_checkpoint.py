"""Checkpoints: round trip, atomicity, consistency checks, and refusal of malicious pickles."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch

from unetkit.training.checkpoint import (CheckpointError, checkpoint_files, load_checkpoint, load_state_file,
                                         load_weights, save_checkpoint, unwrap_model)


class _Planted:
    """Unpickling this object runs ``open(marker, 'w')``: the classic code-execution payload."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.InstanceNorm2d(4, affine=True),
                               torch.nn.Conv2d(4, 2, 1))


def _trained(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.99, nesterov=True)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(2, 1, 8, 8)).square().mean().backward()
        opt.step()
    return opt


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model = _tiny_model()
    opt = _trained(model)
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    save_checkpoint(tmp_path, "checkpoint_latest", model, optimizer=opt, meta={"epoch": 3, "config": {"lr": 0.1}})
    after_save = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)

    ck = load_checkpoint(tmp_path, "checkpoint_latest")
    assert ck.meta["epoch"] == 3 and ck.meta["config"] == {"lr": 0.1}
    fresh = _tiny_model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    fresh.load_state_dict(ck.weights)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.99, nesterov=True)
    opt2.load_state_dict(ck.state["optimizer"])
    for s1, s2 in zip(opt.state.values(), opt2.state.values()):
        assert torch.equal(s1["momentum_buffer"], s2["momentum_buffer"])

    from unetkit.training.checkpoint import set_rng_state
    set_rng_state(ck.state["rng"], ck.meta["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(after_save[0], again[0]) and np.array_equal(after_save[1], again[1])
    assert after_save[2] == again[2]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


class _CompiledLike(torch.nn.Module):
    """Stands in for torch.compile's OptimizedModule, which keeps the network as ``_orig_mod``."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self._orig_mod = inner


def test_prefixes_of_wrappers_are_removed(tmp_path):
    model = _tiny_model()
    wrapped = _CompiledLike(model)
    assert "_orig_mod.0.weight" in wrapped.state_dict()
    assert unwrap_model(wrapped) is model
    save_checkpoint(tmp_path, "w", wrapped)
    assert set(load_weights(tmp_path / "w.safetensors")) == set(model.state_dict())


def _plant_malicious_state(path, marker) -> None:
    with open(path, "wb") as handle:
        pickle.dump({"optimizer": _Planted(str(marker))}, handle)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_planted_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.state.pt"
    _plant_malicious_state(evil, marker)
    # Sanity check of the payload itself: plain pickle would run it.
    with open(evil, "rb") as handle:
        pickle.load(handle)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError, match="refused to load"):
        load_state_file(evil)
    assert not marker.exists()

    # The same payload inside torch.save's zip format.
    zipped = tmp_path / "evil_zip.state.pt"
    torch.save({"optimizer": _Planted(str(marker))}, zipped)
    marker.unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_state_file(zipped)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_state_with_forged_hash_still_refused(tmp_path):
    """An attacker who rewrites the JSON's hashes too gets no further: weights_only refuses."""
    import hashlib

    model = _tiny_model()
    save_checkpoint(tmp_path, "checkpoint_final", model, optimizer=_trained(model), meta={"epoch": 1})
    weights, state, meta_path = checkpoint_files(tmp_path, "checkpoint_final")
    marker = tmp_path / "pwned"
    _plant_malicious_state(state, marker)
    meta = json.loads(meta_path.read_text())
    meta["sha256"]["state"] = hashlib.sha256(state.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(tmp_path, "checkpoint_final")
    assert not marker.exists()


def test_replaced_or_torn_file_is_detected(tmp_path):
    model = _tiny_model()
    save_checkpoint(tmp_path, "checkpoint_latest", model, meta={"epoch": 1})
    weights, state, meta_path = checkpoint_files(tmp_path, "checkpoint_latest")
    old_meta = meta_path.read_text()
    # A later save whose JSON rename never happened: new weights beside the old JSON.
    with torch.no_grad():
        next(model.parameters()).add_(1)
    save_checkpoint(tmp_path, "checkpoint_latest", model, meta={"epoch": 2})
    meta_path.write_text(old_meta)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(tmp_path, "checkpoint_latest")
    # Not a safetensors file at all.
    weights.write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError):
        load_weights(weights)


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    model = _tiny_model()
    save_checkpoint(tmp_path, "checkpoint_latest", model, meta={"epoch": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, "checkpoint_latest", model, meta={"epoch": 2})
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before
    assert load_checkpoint(tmp_path, "checkpoint_latest").meta["epoch"] == 1
