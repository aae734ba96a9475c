"""Tests of the CNN variants of the model zoo: parameter counts against each paper's figure, and
what the generic tests over ``list_models()`` (tests/test_models.py) cannot see: UNet++ pruning and
side outputs, deep-supervision resolutions, odd patch sizes, the plan topology, 2D/3D.

Each entry of PAPER_COUNTS names the paper, its figure and the configuration (input channels,
classes, widths) that gives it; the tolerance is 5% (most match within 1.1%, two exactly).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from unetkit.models import count_parameters, create_model, model_info

CNN_ZOO = ("unet", "unet3d", "unetpp", "unet3plus", "attention_unet", "r2unet", "runet", "resunetpp",
           "multiresunet", "u2net", "u2net_small")

# (name, dims, in_channels, classes, extra kwargs, paper figure, our exact count, source of the figure)
PAPER_COUNTS: list[tuple[str, int, int, int, dict[str, Any], float, int, str]] = [
    ("unet", 2, 1, 2, {}, 31.03e6, 31_030_658,
     "Ronneberger 2015 Fig. 1 (no count in the paper; the commonly cited ~31.0M, padded convs)"),
    ("unet3d", 3, 3, 3, {"norm": "none"}, 19_069_955, 19_069_955,
     "Cicek 2016 Sec. 2: 19,069,955 (3 channels in, 3 labels; no learned BN affine, no up-conv bias)"),
    ("unet3d", 3, 3, 3, {}, 19_069_955, 19_074_627, "same, with the batch norm's affine (default)"),
    ("unet", 2, 1, 1, {"features_per_stage": [32, 64, 128, 256, 512]}, 7.76e6, 7_759_521,
     "Zhou 2018 Table 1 / Ibtehaz 2020 Table 2: U-Net baseline 32..512 (7,759,521)"),
    ("unetpp", 2, 1, 1, {}, 9.04e6, 9_041_700, "Zhou 2018 Table 1: UNet++ 9.04M (32..512, 1 class)"),
    ("unet3plus", 2, 3, 1, {}, 26.97e6, 26_989_637,
     "Huang 2020 Table 1: 26.97M (64..1024, 3 in, 1 class; +0.07% for the 4 extra deep-supervision heads)"),
    ("attention_unet", 3, 1, 2, {}, 6.40e6, 6_472_784,
     "Oktay 2018 Tables 1-2: Attention U-Net 6.40M (16..256, 2 gates per level as the reference code)"),
    ("attention_unet", 3, 1, 2, {"gates_per_level": 0}, 5.88e6, 5_887_466,
     "Oktay 2018 Tables 1-2: U-Net baseline 5.88M (same network without gates)"),
    ("r2unet", 2, 1, 1, {}, 1.037e6, 1_046_833, "Alom 2018 Sec. IV: ~1.037M (16..128, t=2)"),
    ("runet", 2, 1, 1, {}, 1.037e6, 1_046_833, "Alom 2018 Sec. IV: ~1.037M (16..128, t=2)"),
    ("resunetpp", 2, 3, 1, {}, 4.07e6, 4_062_993,
     "Jha 2019: 4.07M (Keras total incl. 7,392 BN running statistics = 4,070,385)"),
    ("multiresunet", 2, 1, 1, {}, 7_262_750, 7_244_528, "Ibtehaz 2020 Table 2: 7,262,750 (Keras total)"),
    ("u2net", 2, 3, 1, {}, 44.0e6, 44_009_869, "Qin 2020 Sec. 4: 176.3 MB = 44.0M (reference U2NET: 44,009,869)"),
    ("u2net_small", 2, 3, 1, {}, 1.13e6, 1_131_181, "Qin 2020 Sec. 4: U2-Net-dagger 4.7 MB = 1.13M"),
]


@pytest.mark.parametrize("case", PAPER_COUNTS, ids=[f"{c[0]}-{c[1]}d-{i}" for i, c in enumerate(PAPER_COUNTS)])
def test_parameter_count_matches_paper(case: tuple) -> None:
    name, dims, cin, ncls, kwargs, paper, exact, _source = case
    with torch.device("meta"):
        model = create_model(name, dims, cin, ncls, deep_supervision=model_info(name).deep_supervision, **kwargs)
    n = count_parameters(model)
    assert n == exact
    assert abs(n - paper) / paper < 0.05


def test_all_cnn_variants_registered_with_divisibility() -> None:
    for name in CNN_ZOO:
        info = model_info(name)
        assert "divisible_by" in info.extra and info.paper
        assert "paper_configuration" in info.extra or "reference_configuration" in info.extra


@pytest.mark.parametrize("name", CNN_ZOO)
def test_odd_patch_multiple_of_divisor(name: str) -> None:
    """A patch that is an odd multiple of the network's total downsampling (e.g. 3*16 x 5*16)."""
    info = model_info(name)
    div = max(int(info.extra["divisible_by"]), 8)  # the tiny instances have 3-4 levels
    dims = info.spatial_dims[0]
    patch = (3 * div, 5 * div) if dims == 2 else (3 * div, 5 * div, 3 * div)
    torch.manual_seed(0)
    model = create_model(name, dims, 1, 2, deep_supervision=False, **info.tiny_kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, *patch))
    assert out.shape == (1, 2, *patch)


@pytest.mark.parametrize("name", ["unet", "unetpp"])
def test_paper_no_norm_configuration_trains(name: str) -> None:
    """The papers' norm-free networks (the tiny test instances use batch norm)."""
    torch.manual_seed(0)
    model = create_model(name, 2, 1, 2, deep_supervision=False, n_stages=3, features_per_stage=[8, 16, 32],
                         norm="none", dropout=0.0)
    x = torch.randn(2, 1, 16, 24)
    target = (x[:, 0] > 0.3).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), target)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and loss.item() < first


def test_patch_not_divisible_is_a_clear_error() -> None:
    model = create_model("unet", 2, 1, 2, deep_supervision=False, **model_info("unet").tiny_kwargs)
    with pytest.raises(ValueError, match="multiple of"):
        model(torch.zeros(1, 1, 36, 40))


def test_u2net_takes_any_patch_size() -> None:
    model = create_model("u2net_small", 2, 1, 2, **model_info("u2net_small").tiny_kwargs).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 1, 37, 29))
    assert outs[0].shape == (1, 2, 37, 29) and outs[1].shape == (1, 2, 19, 15)


def test_unetpp_pruning_and_side_outputs() -> None:
    torch.manual_seed(0)
    kw = {**model_info("unetpp").tiny_kwargs, "n_stages": 5, "features_per_stage": [4, 8, 8, 16, 16]}
    full = create_model("unetpp", 2, 1, 2, deep_supervision=False, **kw).eval()
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        heads = full.side_outputs(x)
        assert len(heads) == 4 and all(h.shape == (1, 2, 32, 48) for h in heads)
        torch.testing.assert_close(full(x), torch.stack(heads).mean(0))  # accurate mode (default)
        for level in (1, 2, 3, 4):
            pruned = create_model("unetpp", 2, 1, 2, deep_supervision=False, prune_level=level, ensemble=False,
                                  **kw).eval()
            pruned.load_state_dict(full.state_dict())  # pruning is an inference-time choice: same weights
            torch.testing.assert_close(pruned(x), heads[level - 1])
    with pytest.raises(ValueError, match="prune_level"):
        create_model("unetpp", 2, 1, 2, deep_supervision=False, prune_level=5, **kw)


def test_unetpp_pruned_model_skips_deep_nodes() -> None:
    """L^1 runs only X^{0,0}, X^{1,0}, X^{0,1}: the deeper nodes get no gradient."""
    kw = {**model_info("unetpp").tiny_kwargs, "prune_level": 1, "ensemble": False}
    model = create_model("unetpp", 2, 1, 2, deep_supervision=False, **kw)
    model(torch.randn(1, 1, 16, 24)).sum().backward()
    assert model.nodes["x2_0"][0][0].weight.grad is None
    assert model.nodes["x0_1"][0][0].weight.grad is not None


@pytest.mark.parametrize("name", ["unet3plus", "attention_unet", "u2net_small"])
def test_deep_supervision_resolutions(name: str) -> None:
    model = create_model(name, 2, 1, 2, **model_info(name).tiny_kwargs)
    outs = model(torch.randn(1, 1, 32, 48))
    sizes = [tuple(o.shape[2:]) for o in outs]
    assert sizes[0] == (32, 48)
    assert sizes[1] == (16, 24) and sizes[2] == (8, 12)  # then each coarser level, halving


def test_plan_topology_is_accepted_anisotropic_3d() -> None:
    """The trainer passes a plan's n_stages/features/kernels/strides to any --arch: each variant
    takes them, including anisotropic strides and 1x3x3 kernels."""
    topo = {"n_stages": 4, "features_per_stage": [4, 8, 16, 16], "kernel_sizes": [[1, 3, 3]] + [[3, 3, 3]] * 3,
            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]}
    x = torch.randn(1, 1, 8, 24, 16)
    for name in CNN_ZOO:
        extra = {"mid_channels": 4, "decoder_mid_channels": 4} if name.startswith("u2net") else {}
        extra.update({"cat_channels": 4} if name == "unet3plus" else {})
        model = create_model(name, 3, 1, 2, deep_supervision=False, **topo, **extra).eval()
        with torch.no_grad():
            assert model(x).shape == (1, 2, 8, 24, 16), name


def test_defaults_are_the_papers() -> None:
    assert model_info("unet").default_kwargs(2)["features_per_stage"] == [64, 128, 256, 512, 1024]
    assert model_info("unet3d").default_kwargs(3)["features_per_stage"] == [64, 128, 256, 512]
    assert model_info("unetpp").default_kwargs(2)["prune_level"] == 4
    assert model_info("attention_unet").default_kwargs(3)["features_per_stage"] == [16, 32, 64, 128, 256]
    assert model_info("r2unet").default_kwargs(2)["steps"] == 2
    assert model_info("u2net").default_kwargs(2)["features_per_stage"] == [64, 128, 256, 512, 512, 512]
    assert not model_info("unet").deep_supervision and model_info("unet3plus").deep_supervision
