"""Fine-tuning: weight transfer with its report, first-conv adaptation, refusal, encoder warm-up, resume.

Networks are the tiny 2D plain U-Nets of ``test_trainer.make_tiny_workdir`` (3 stages, 4-16
features); each training run takes a second or two on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from test_trainer import FAST, make_tiny_workdir
from unetkit.models import create_model
from unetkit.training.pretrained import PretrainedError, adapt_first_conv, transfer_weights

KWARGS = {"n_stages": 3, "features_per_stage": [4, 8, 16], "kernel_sizes": [[3, 3]] * 3,
          "strides": [[1, 1], [2, 2], [2, 2]], "n_conv_per_stage": [1] * 3, "n_conv_per_stage_decoder": [1] * 2}


def tiny_net(in_channels: int, num_classes: int, seed: int, **changes) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("plain_unet", 2, in_channels, num_classes, deep_supervision=True, **{**KWARGS, **changes})


def test_transfer_loads_matching_and_names_skipped_with_reasons():
    source = tiny_net(1, 3, seed=0)
    target = tiny_net(2, 2, seed=1)   # another channel count and another label set
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = transfer_weights(target, source.state_dict(), num_classes=2)
    after, src = target.state_dict(), source.state_dict()
    first = "encoder.0.0.conv.weight"
    assert "first convolution for another channel count (pretrained 1 input channel(s), this network 2)" \
        in report.skipped[first]
    heads = [k for k in after if k.startswith("decoder.heads")]
    assert heads and all("segmentation head for another label set (pretrained 3 outputs, this network 2)"
                         in report.skipped[k] for k in heads if k.endswith("weight"))
    for name in after:
        if name in report.skipped:
            assert torch.equal(after[name], before[name]), name          # left as initialised
        else:
            assert name in report.loaded and torch.equal(after[name], src[name]), name
    # All but the first conv and the heads came across: every other tensor has the same shape.
    assert len(report.loaded) == sum(1 for k in after if src[k].shape == after[k].shape)
    assert any(line.startswith("pretrained: skipped encoder.0.0.conv.weight") for line in report.lines())


def test_first_conv_adaptation_hand_worked_and_invariant():
    weight = torch.arange(2 * 2 * 1 * 1, dtype=torch.float32).reshape(2, 2, 1, 1)  # out 2, in 2
    # average 2 -> 3 channels: mean of (0, 1) = 0.5 and (2, 3) = 2.5, times 2/3.
    avg = adapt_first_conv(weight, 3, "average")
    assert torch.allclose(avg[:, :, 0, 0], torch.tensor([[1 / 3] * 3, [5 / 3] * 3]))
    # repeat 2 -> 4: channels 0, 1, 0, 1 of the source, times 2/4.
    rep = adapt_first_conv(weight, 4, "repeat")
    assert torch.allclose(rep[:, :, 0, 0], torch.tensor([[0, 0.5, 0, 0.5], [1, 1.5, 1, 1.5]]))
    # An image given in every channel gives the source's response (the reason for the scale).
    conv = torch.randn(5, 3, 3, 3)
    image = torch.randn(1, 1, 9, 9)
    expected = F.conv2d(image.expand(1, 3, 9, 9), conv)
    for mode, channels in (("average", 2), ("average", 5), ("repeat", 6)):
        got = F.conv2d(image.expand(1, channels, 9, 9), adapt_first_conv(conv, channels, mode))
        assert torch.allclose(got, expected, atol=1e-5), (mode, channels)


def test_transfer_adapts_first_conv_when_asked():
    source, target = tiny_net(1, 3, seed=0), tiny_net(2, 3, seed=1)
    report = transfer_weights(target, source.state_dict(), num_classes=3, channels="average")
    first = "encoder.0.0.conv.weight"
    assert first in report.adapted and first not in report.skipped
    w = source.state_dict()[first]
    assert torch.allclose(target.state_dict()[first], torch.cat([w / 2, w / 2], dim=1))


def test_refuses_when_no_encoder_tensor_fits_and_leaves_network_untouched():
    source = tiny_net(1, 3, seed=0, features_per_stage=[8, 16, 32])
    target = tiny_net(1, 3, seed=1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(PretrainedError, match=r"no tensor of the encoder fits.*encoder\.0\.0\.conv\.weight: "
                                              r"shape \[8, 1, 3, 3\] in the pretrained model, \[4, 1, 3, 3\]"):
        transfer_weights(target, source.state_dict(), num_classes=3)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


# ------------------------------------------------------------------------------ training runs

def _encoder(weights: dict) -> dict:
    return {k: v for k, v in weights.items() if k.startswith("encoder.")}


def _pretrain(tmp_path: Path) -> Path:
    from unetkit.training.trainer import train

    work = make_tiny_workdir(tmp_path / "src", name="Src", ndim=2, seed=1)
    res = train(work, "Src", "2d", "all", {**FAST, "epochs": 1}, echo=False)
    return res.output_dir


def test_finetune_warmup_freezes_encoder_then_trains_all_and_resume_does_not_reapply(tmp_path):
    from unetkit.training.trainer import train

    src_fold = _pretrain(tmp_path)
    src_weights = load_file(str(src_fold / "checkpoint_final.safetensors"))
    sha = hashlib.sha256((src_fold / "checkpoint_final.safetensors").read_bytes()).hexdigest()
    work = make_tiny_workdir(tmp_path / "tgt", name="Tiny", ndim=2, seed=2)
    # 1 epoch of 3 iterations, all inside the warm-up of 4: encoder as loaded, the rest trained.
    over = {**FAST, "epochs": 1, "pretrained": str(src_fold.parent), "freeze_encoder_iterations": 4}
    res = train(work, "Tiny", "2d", 0, over, echo=False)
    after = load_file(str(res.output_dir / "checkpoint_final.safetensors"))
    assert all(torch.equal(after[k], v) for k, v in _encoder(src_weights).items())
    head = "decoder.heads.1.weight"
    assert not torch.equal(after[head], src_weights[head])
    meta = json.loads((res.output_dir / "checkpoint_final.json").read_text())
    recorded = json.loads((res.output_dir / "training_config.json").read_text())["pretrained"]
    for record in (meta["pretrained"], recorded):
        assert record["sha256"] == sha and record["path"] == str(src_fold / "checkpoint_final.safetensors")
        assert len(record["loaded"]) == len(src_weights) and not record["skipped"]
    # Resume to 3 epochs (iterations 3..8 >= 4): the encoder trains; the source is gone, and the
    # resumed run must not read it again (nor overwrite the trained weights with it).
    import shutil

    shutil.rmtree(tmp_path / "src")
    res2 = train(work, "Tiny", "2d", 0, {**over, "epochs": 3}, resume=True, echo=False)
    final = load_file(str(res2.output_dir / "checkpoint_final.safetensors"))
    assert not torch.equal(final["encoder.0.0.conv.weight"], src_weights["encoder.0.0.conv.weight"])
    log = (res2.output_dir / "train.log").read_text()
    assert log.count("pretrained: loaded") == 1
    assert "iteration 4: encoder (" in log and "trainable again" in log
    assert json.loads((res2.output_dir / "checkpoint_final.json").read_text())["pretrained"]["sha256"] == sha


def test_after_warmup_everything_trains(tmp_path):
    """Warm-up of 2 iterations within a run of 6: afterwards encoder and head both moved."""
    from unetkit.training.trainer import train

    src_fold = _pretrain(tmp_path)
    src_weights = load_file(str(src_fold / "checkpoint_final.safetensors"))
    work = make_tiny_workdir(tmp_path / "tgt", name="Tiny", ndim=2, seed=2)
    res = train(work, "Tiny", "2d", 0, {**FAST, "pretrained": str(src_fold), "freeze_encoder_iterations": 2},
                echo=False)
    after = load_file(str(res.output_dir / "checkpoint_final.safetensors"))
    changed = [k for k, v in _encoder(src_weights).items() if not torch.equal(after[k], v)]
    assert len(changed) == len([k for k in _encoder(src_weights) if not k.endswith("num_batches_tracked")])


def test_cli_refuses_mismatched_pretrained_naming_it(tmp_path):
    work = make_tiny_workdir(tmp_path, name="Tiny", ndim=2)
    other = tiny_net(1, 3, seed=0, features_per_stage=[8, 16, 32])
    weights = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(weights))
    cmd = [sys.executable, "-m", "unetkit.cli.train_cmd", "Tiny", "-c", "2d", "-f", "0", "--workdir", str(work),
           "--device", "cpu", "--num-workers", "0", "--epochs", "1", "--iterations-per-epoch", "1", "--quiet",
           "--no-validation", "--pretrained", str(weights)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert f"--pretrained {weights}" in proc.stderr and "no tensor of the encoder fits" in proc.stderr
    assert "[8, 1, 3, 3] in the pretrained model, [4, 1, 3, 3] in this network" in proc.stderr
    pickled = tmp_path / "model.pth"
    torch.save(other.state_dict(), pickled)
    proc = subprocess.run([*cmd[:-1], str(pickled)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "must be a .safetensors file" in proc.stderr
