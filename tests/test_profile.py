"""unetkit.models.profile and the ``unetkit models`` / ``unetkit profile`` commands."""

from __future__ import annotations

import json

import pytest
import torch

from unetkit.cli import main
from unetkit.models.profile import count_flops, model_size, profile_model

TINY = {"n_stages": 3, "features_per_stage": [4, 8, 16], "strides": [1, 2, 2]}


def test_flops_of_a_convolution_are_2_per_mac() -> None:
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(conv, torch.zeros(1, 3, 10, 12)) == 2 * 8 * 3 * 9 * 10 * 12


def test_model_size_on_meta_device() -> None:
    size = model_size("plain_unet", 2, (32, 32), kwargs=TINY)
    assert size["params"] > 0 and size["flops"] > 0 and size["macs"] == size["flops"] // 2
    assert model_size("unetr", 3)["params"] == 92_783_842  # 96^3, 1 in, 2 classes (14 classes: 92,784,046)


def test_profile_model_reports_latency_memory_and_methods() -> None:
    out = profile_model("plain_unet", None, 1, 2, (32, 32), batch=2, repeats=3, warmup=1, kwargs=TINY)
    assert out["spatial_dims"] == 2 and out["patch"] == [32, 32] and out["batch"] == 2
    assert len(out["latency_ms"]["all"]) == 3 and out["latency_ms"]["min"] <= out["latency_ms"]["median"]
    assert out["peak_memory_mb"] >= 0 and out["params"] > 0 and out["gflops"] > 0
    assert set(out["methods"]) == {"flops", "latency", "memory"}
    json.dumps(out)  # JSON-ready


def test_profile_checks_patch_and_dims() -> None:
    with pytest.raises(ValueError, match="has 2 axes"):
        profile_model("plain_unet", 3, patch=(32, 32), kwargs=TINY)


def test_profile_cli_table_and_json(tmp_path, capsys) -> None:
    path = tmp_path / "p.json"
    assert main(["profile", "swin_unet", "--patch", "64", "64", "--repeats", "1", "--warmup", "0",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "swin_unet" in out and "GFLOPs" in out and "latency" in out
    data = json.loads(path.read_text())
    assert data["params"] == 27_165_156  # 1 input channel, 2 classes (3 in, 9 classes: 27,168,900)
    assert main(["profile", "no_such_model", "--patch", "8", "8"]) == 1
    assert main(["profile", "unetr", "--patch", "16", "16", "16", "--dims", "2"]) == 2


def test_models_cli_lists_params_and_flops(capsys) -> None:
    assert main(["models", "--family", "transformer", "--dims", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert {"transunet", "swin_unet", "unetr", "swin_unetr", "focal_unet"} <= set(by_name)
    assert by_name["swin_unet"]["params"] == 27_165_156 and by_name["swin_unet"]["patch"] == [224, 224]
    assert all(r["dims"] == 2 and r["gflops"] > 0 for r in rows)
    assert main(["models", "--no-size", "--family", "sequence"]) == 0
    assert "umamba_bot" in capsys.readouterr().out
    assert main(["models", "--family", "nope"]) == 2


def test_sequence_models_are_counted_on_meta() -> None:
    """Their float32 sections switch autocast off only where it exists (not on meta)."""
    for name in ("umamba_bot", "umamba_enc", "xlstm_unet_bot"):
        size = model_size(name, 3, (32, 32, 32))
        assert size["params"] > 0 and size["flops"] > 0
