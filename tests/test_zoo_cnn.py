"""Tests of the CNN variants of the model zoo: parameter counts against each paper's figure, and
what the generic tests over ``list_models()`` (tests/test_models.py) cannot see: UNet++ pruning and
side outputs, deep-supervision resolutions, odd patch sizes, the plan topology, 2D/3D.

Each entry of PAPER_COUNTS names the paper, its figure as printed and the configuration (input
channels, classes, widths) that gives it; our count must round to the printed figure, or lie within
the tolerance the entry states with its reason. PARAMETER_SNAPSHOTS are our own exact counts.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from paper_counts import assert_matches_paper, keras_count
from unetkit.models import count_parameters, create_model, model_info

CNN_ZOO = ("unet", "unet3d", "unetpp", "unet3plus", "attention_unet", "r2unet", "runet", "resunetpp",
           "multiresunet", "u2net", "u2net_small")


def _meta(name: str, dims: int, cin: int, ncls: int, **kwargs: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, dims, cin, ncls, deep_supervision=model_info(name).deep_supervision, **kwargs)


def _one_head(model: torch.nn.Module) -> int:
    """UNet 3+ as its paper counts it: the full-resolution head only (ours builds one per level)."""
    return count_parameters(model) - sum(p.numel() for head in model.heads[1:] for p in head.parameters())


# (name, dims, in_channels, classes, extra kwargs, how the paper counts, figure as printed,
#  relative tolerance (0: the printed precision), source and, for a tolerance, its reason)
PAPER_COUNTS: list[tuple[str, int, int, int, dict[str, Any], Any, str, float, str]] = [
    ("unet", 2, 1, 2, {}, count_parameters, "31.03M", 0.0,
     "Ronneberger 2015 Fig. 1 (no count in the paper; the commonly cited figure for padded convs)"),
    ("unet3d", 3, 3, 3, {"norm": "none"}, count_parameters, "19,069,955", 0.0,
     "Cicek 2016 Sec. 2 (3 channels in, 3 labels; no learned BN affine, no up-conv bias)"),
    ("unet", 2, 1, 1, {"features_per_stage": [32, 64, 128, 256, 512]}, count_parameters, "7,759,521", 0.0,
     "Ibtehaz 2020 Table 2: U-Net baseline 32..512 (Zhou 2018 Table 1: 7.76M)"),
    ("unetpp", 2, 1, 1, {}, count_parameters, "9.04M", 0.0, "Zhou 2018 Table 1: UNet++ (32..512, 1 class)"),
    ("unet3plus", 2, 3, 1, {}, _one_head, "26.97M", 0.0, "Huang 2020 Table 1 (64..1024, 3 in, 1 class)"),
    ("attention_unet", 3, 1, 2, {}, count_parameters, "6.40M", 0.012,
     "Oktay 2018 Tables 1-2; +1.1%: 2 gates per level as the reference code, the paper's exact "
     "gate layout for its count is not stated"),
    ("attention_unet", 3, 1, 2, {"gates_per_level": 0}, count_parameters, "5.88M", 0.0015,
     "Oktay 2018 Tables 1-2: U-Net baseline (same network without gates); +0.13%, not located"),
    ("r2unet", 2, 1, 1, {}, count_parameters, "~1.037M", 0.01,
     "Alom 2018 Sec. IV (16..128, t=2); +0.95%, not located (the paper gives no layer table)"),
    ("runet", 2, 1, 1, {}, count_parameters, "~1.037M", 0.01, "Alom 2018 Sec. IV; as r2unet"),
    ("resunetpp", 2, 3, 1, {}, keras_count, "4.07M", 0.0,
     "Jha 2019 (Keras: the total includes the batch norms' 7,392 moving statistics)"),
    ("multiresunet", 2, 1, 1, {}, keras_count, "7,262,750", 0.001,
     "Ibtehaz 2020 Table 2 (Keras total); +0.09% (+6,298), not located"),
    ("u2net", 2, 3, 1, {}, count_parameters, "44.0M", 0.0, "Qin 2020 Sec. 4: 176.3 MB"),
    ("u2net_small", 2, 3, 1, {}, count_parameters, "1.13M", 0.0, "Qin 2020 Sec. 4: U2-Net-dagger 4.7 MB"),
]


@pytest.mark.parametrize("case", PAPER_COUNTS, ids=[f"{c[0]}-{c[1]}d-{i}" for i, c in enumerate(PAPER_COUNTS)])
def test_parameter_count_matches_paper(case: tuple) -> None:
    name, dims, cin, ncls, kwargs, count, printed, tolerance, source = case
    assert_matches_paper(count(_meta(name, dims, cin, ncls, **kwargs)), printed, tolerance, f"{name} ({source})")


# Snapshots of our own exact counts (the figures quoted in docs/models.md): they flag any change
# of a network's layout; they are not evidence that it is right (the paper comparisons are).
PARAMETER_SNAPSHOTS: list[tuple[str, int, int, int, dict[str, Any], int]] = [
    ("unet", 2, 1, 2, {}, 31_030_658),
    ("unet3d", 3, 3, 3, {"norm": "none"}, 19_069_955),
    ("unet3d", 3, 3, 3, {}, 19_074_627),
    ("unet", 2, 1, 1, {"features_per_stage": [32, 64, 128, 256, 512]}, 7_759_521),
    ("unetpp", 2, 1, 1, {}, 9_041_700),
    ("unet3plus", 2, 3, 1, {}, 26_989_637),
    ("attention_unet", 3, 1, 2, {}, 6_472_784),
    ("attention_unet", 3, 1, 2, {"gates_per_level": 0}, 5_887_466),
    ("r2unet", 2, 1, 1, {}, 1_046_833),
    ("runet", 2, 1, 1, {}, 1_046_833),
    ("resunetpp", 2, 3, 1, {}, 4_062_993),
    ("multiresunet", 2, 1, 1, {}, 7_244_528),
    ("u2net", 2, 3, 1, {}, 44_009_869),
    ("u2net_small", 2, 3, 1, {}, 1_131_181),
]


@pytest.mark.parametrize("case", PARAMETER_SNAPSHOTS,
                         ids=[f"{c[0]}-{c[1]}d-{i}" for i, c in enumerate(PARAMETER_SNAPSHOTS)])
def test_parameter_count_snapshot(case: tuple) -> None:
    """Snapshot of our own count (docs/models.md): a changed layout shows here first."""
    name, dims, cin, ncls, kwargs, snapshot = case
    assert count_parameters(_meta(name, dims, cin, ncls, **kwargs)) == snapshot


def test_all_cnn_variants_registered_with_divisibility() -> None:
    for name in CNN_ZOO:
        info = model_info(name)
        assert "divisible_by" in info.extra and info.paper
        assert isinstance(info.extra["divisible_by"], int) and info.extra["paper_setup"]


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
