"""Starting from the best of several initialisations (training/init_selection.py, issue 14)."""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from test_trainer import FAST, make_tiny_workdir

from unetkit.training.init_selection import select_initialization


def _tiny_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                               torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1))


def _batches() -> list[dict]:
    g = torch.Generator().manual_seed(3)
    return [{"data": torch.randn(2, 1, 8, 8, generator=g), "target": torch.randint(0, 3, (2, 8, 8), generator=g)}
            for _ in range(2)]


def _ce(outputs, target):
    return F.cross_entropy(outputs, target)


def test_one_candidate_is_exactly_the_single_draw():
    torch.manual_seed(11)
    single = _tiny_net().state_dict()
    torch.manual_seed(11)
    network, record = select_initialization(_tiny_net, 1, _batches(), _ce, lambda x: x)
    assert record.losses == [] and record.chosen == 0
    for key, value in single.items():
        assert torch.equal(network.state_dict()[key], value), key


def test_keeps_the_draw_with_the_lowest_loss_with_its_buffers_as_drawn():
    # Reference: the same four draws made here one after another from the same seed, each
    # scored by torch's own cross-entropy in train mode; the selection must keep the argmin.
    batches = _batches()
    torch.manual_seed(5)
    draws = [_tiny_net() for _ in range(4)]
    expected_states = [{k: v.clone() for k, v in d.state_dict().items()} for d in draws]
    expected_losses = []
    with torch.no_grad():
        for d in draws:
            d.train()
            expected_losses.append(sum(F.cross_entropy(d(b["data"]), b["target"]).item() for b in batches) / 2)
    best = min(range(4), key=expected_losses.__getitem__)
    assert len({round(v, 6) for v in expected_losses}) == 4  # the draws really differ

    torch.manual_seed(5)
    network, record = select_initialization(_tiny_net, 4, batches, _ce, lambda x: x)
    assert record.chosen == best
    assert [round(v, 6) for v in record.losses] == [round(v, 6) for v in expected_losses]
    for key, value in expected_states[best].items():
        # Weights as drawn, and the batch-norm statistics the scoring passes moved are put back.
        assert torch.equal(network.state_dict()[key], value), key
    assert int(network.state_dict()["1.num_batches_tracked"]) == 0


def test_a_nan_loss_is_never_chosen():
    calls = iter([math.nan, 2.0, math.nan, 3.0])

    def loss_fn(outputs, target):
        return torch.tensor(next(calls))

    batch = [_batches()[0]]
    _, record = select_initialization(_tiny_net, 4, batch, loss_fn, lambda x: x)
    assert record.chosen == 1


def test_fresh_runs_select_and_record_resumes_do_not(tmp_path):
    from unetkit.training.trainer import train

    work = make_tiny_workdir(tmp_path, num_cases=6, batch=2)
    train(work, "Tiny", "3d_fullres", 0, {**FAST, "epochs": 1}, echo=False)
    out = work / "Tiny" / "models" / "3d_fullres__plain_unet" / "fold_0"
    record = json.loads((out / "training_config.json").read_text())["init_selection"]
    assert record["candidates"] == 4 and record["batches"] == 4 and len(record["losses"]) == 4
    assert record["losses"][record["chosen"]] == min(record["losses"])
    assert "initialisation: 4 networks drawn" in (out / "train.log").read_text()
    # Resuming continues from the checkpoint: nothing is drawn or scored again.
    train(work, "Tiny", "3d_fullres", 0, {**FAST, "epochs": 2}, resume=True, echo=False)
    assert (out / "train.log").read_text().count("initialisation:") == 1
    # --init-candidates 1 makes the single draw and records nothing.
    train(work, "Tiny", "3d_fullres", 1, {**FAST, "epochs": 1, "init_candidates": 1}, echo=False)
    single = json.loads((out.parent / "fold_1" / "training_config.json").read_text())
    assert single["init_selection"] is None and single["config"]["init_candidates"] == 1
