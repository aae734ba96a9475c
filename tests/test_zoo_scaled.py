"""Scaled and lightweight variants: parameter counts against the papers' figures, and their pieces.

Each count is taken with the configuration the paper reports (input channels, classes, widths; see
each model's docstring and ``model_info(name).extra["paper_setup"]``), on the ``meta`` device (no
memory, no initialisation: STU-Net-H has 1.46 billion parameters). Our count must round to the
figure as the paper prints it, or lie within the tolerance an entry states with its reason.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from paper_counts import assert_matches_paper, printed_figure
from unetkit.models import count_parameters, create_model, model_info

# (name, dims, in_channels, num_classes, figure as printed, relative tolerance (0: the printed
#  precision), where the paper prints it and, for a tolerance, why)
PAPER_COUNTS = [
    ("stunet_s", 3, 1, 105, "14.60M", 0.0, "Huang et al. 2023, STU-Net Table 1 (S)"),
    ("stunet_b", 3, 1, 105, "58.26M", 0.0, "Huang et al. 2023, STU-Net Table 1 (B)"),
    ("stunet_l", 3, 1, 105, "440.30M", 0.0, "Huang et al. 2023, STU-Net Table 1 (L)"),
    ("stunet_h", 3, 1, 105, "1457.33M", 0.0, "Huang et al. 2023, STU-Net Table 1 (H)"),
    ("mednext_s", 3, 1, 14, "5.6M", 0.0, "Roy et al. MICCAI 2023, MedNeXt Table 1 (S, kernel 3)"),
    ("mednext_b", 3, 1, 14, "10.5M", 0.0, "Roy et al. MICCAI 2023, MedNeXt Table 1 (B, kernel 3)"),
    ("mednext_m", 3, 1, 14, "17.6M", 0.0, "Roy et al. MICCAI 2023, MedNeXt Table 1 (M, kernel 3)"),
    ("mednext_l", 3, 1, 14, "61.8M", 0.0, "Roy et al. MICCAI 2023, MedNeXt Table 1 (L, kernel 3)"),
    ("unext", 2, 3, 1, "1.47M", 0.0, "Valanarasu & Patel MICCAI 2022, UNeXt Table 1"),
    ("cmunext", 2, 3, 1, "3.14M", 0.003,
     "Tang et al. ISBI 2024, CMUNeXt Table 1; ours 3,149,185 (+0.29%) would print 3.15M: not located"),
    ("egeunet", 2, 3, 1, "0.053M", 0.0, "Ruan et al. MICCAI 2023, EGE-UNet Table 1"),
    ("ritnet", 2, 1, 4, "248,900", 0.0, "Chaudhary et al. ICCVW 2019, RITnet Sec. 3"),
]


def _meta(name: str, dims: int, cin: int, ncls: int, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, dims, cin, ncls, deep_supervision=model_info(name).deep_supervision, **kw)


@pytest.mark.parametrize("name,dims,cin,ncls,printed,tolerance,source", PAPER_COUNTS, ids=[c[0] for c in PAPER_COUNTS])
def test_parameter_count_matches_paper(name: str, dims: int, cin: int, ncls: int, printed: str, tolerance: float,
                                       source: str) -> None:
    assert_matches_paper(count_parameters(_meta(name, dims, cin, ncls)), printed, tolerance, f"{name} ({source})")
    assert model_info(name).extra["paper_params"] == pytest.approx(printed_figure(printed)[0])


def test_parameter_count_snapshots() -> None:
    """Snapshots of our own exact counts (quoted in the docstrings and docs/models.md): they flag
    any change of a network's layout; the paper comparisons above are the evidence it is right."""
    assert count_parameters(_meta("stunet_b", 3, 1, 105)) == 58_262_669
    assert count_parameters(_meta("mednext_b", 3, 1, 14)) == 10_540_198
    assert count_parameters(_meta("unext", 2, 3, 1)) == 1_471_921
    assert count_parameters(_meta("cmunext", 2, 3, 1)) == 3_149_185
    assert count_parameters(_meta("egeunet", 2, 3, 1)) == 53_374
    assert count_parameters(_meta("ritnet", 2, 1, 4)) == 248_900


@pytest.mark.parametrize("name,paper_gmacs", [("unext", 0.57), ("egeunet", 0.072)])
def test_flops_at_256_match_paper(name: str, paper_gmacs: float) -> None:
    """The papers' "GFLOPs" are multiply-accumulates at 256x256 (FlopCounterMode counts 2 per MAC)."""
    model = _meta(name, 2, 3, 1).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 256, 256, device="meta"))
    assert counter.get_total_flops() / 2e9 == pytest.approx(paper_gmacs, rel=0.05)


def test_stunet_sizes_differ_only_in_width_and_depth() -> None:
    for size, dims, depth in [("s", 16, 1), ("l", 64, 2), ("h", 96, 3)]:
        kw = model_info(f"stunet_{size}").default_kwargs(3)
        assert kw["dims"][0] == dims and kw["depth"] == [depth] * 6 and kw["strides"][1] == [2, 2, 2]
    # the plan's widths are ignored (a STU-Net size is its widths), its stages and strides are used
    a = _meta("stunet_b", 3, 1, 3, n_stages=4, strides=[1, 2, 2, 2], features_per_stage=[8, 8, 8, 8])
    b = _meta("stunet_b", 3, 1, 3, n_stages=4, strides=[1, 2, 2, 2])
    assert count_parameters(a) == count_parameters(b)
    assert [m.out_channels for m in a.heads] == [3, 3, 3]


def test_stunet_deep_supervision_outputs_full_resolution_first() -> None:
    torch.manual_seed(0)
    model = create_model("stunet_s", 3, 1, 2, n_stages=4, dims=[4, 8, 8, 8], strides=[1, [1, 2, 2], 2, 2])
    outs = model(torch.randn(1, 1, 8, 16, 16))
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 16, 16), (8, 8, 8), (4, 4, 4)]


def test_mednext_levels_kernel5_and_plan_levels() -> None:
    torch.manual_seed(0)
    model = create_model("mednext_s", 2, 1, 2, width=4, kernel_size=5)  # 5 levels: /16
    outs = model(torch.randn(1, 1, 48, 32))
    assert [tuple(o.shape[2:]) for o in outs] == [(48, 32), (24, 16), (12, 8), (6, 4), (3, 2)]
    assert model_info("mednext_s").extra["divisible_by"] == 16
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.randn(1, 1, 40, 32))
    # from a plan: min(5, n_stages) levels; k5 costs more parameters than k3
    assert len(_meta("mednext_b", 3, 1, 3, n_stages=4).heads) == 4
    assert len(_meta("mednext_b", 2, 1, 3, n_stages=8).heads) == 5
    assert count_parameters(_meta("mednext_b", 3, 1, 14, kernel_size=5)) > count_parameters(_meta("mednext_b", 3, 1, 14))


def test_egeunet_deep_supervision_levels() -> None:
    torch.manual_seed(0)
    model = create_model("egeunet", 2, 3, 2)
    outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 2, 64, 96), (1, 2, 32, 48), (1, 2, 16, 24), (1, 2, 8, 12),
                                              (1, 2, 4, 6), (1, 2, 2, 3)]


@pytest.mark.parametrize("name,dims,patch", [("unext", 2, (64, 32)), ("cmunext", 3, (16, 16, 32)),
                                             ("ritnet", 3, (16, 16, 16))])
def test_published_configuration_runs(name: str, dims: int, patch: tuple) -> None:
    model = create_model(name, dims, 1, 2, deep_supervision=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, *patch)).shape == (1, 2, *patch)


# ---------------------------------------------------------------- neU-Net pieces
def test_pixel_shuffle_matches_torch_and_handles_anisotropic_strides() -> None:
    from unetkit.models.neunet import pixel_shuffle

    x = torch.randn(2, 12, 5, 7)
    torch.testing.assert_close(pixel_shuffle(x, (2, 2)), torch.nn.functional.pixel_shuffle(x, 2))
    y = pixel_shuffle(torch.randn(1, 8, 3, 4, 5), (1, 2, 2))
    assert y.shape == (1, 2, 3, 8, 10)


def test_haar_dwt_is_orthonormal() -> None:
    from unetkit.models.neunet import haar_dwt

    x = torch.randn(2, 3, 8, 6, 4)
    w = haar_dwt(x, (0, 1, 2))
    assert w.shape == (2, 24, 4, 3, 2)
    torch.testing.assert_close(w.pow(2).sum(), x.pow(2).sum())  # energy preserved
    torch.testing.assert_close(w[:, :3], torch.nn.functional.avg_pool3d(x, 2) * 8 ** 0.5)  # low band first


def test_neunet_is_plain_unet_plus_subpixel_and_wavelet_parameters() -> None:
    """neU-Net's paper gives no parameter count we could reach: check instead that it is the plain
    U-Net of the same plan with (a) each transposed convolution replaced by a k^D convolution to
    ``skip * prod(stride)`` channels and (b) the wavelet bands entering each stage's first convolution."""
    kw = dict(n_stages=4, features_per_stage=[32, 64, 128, 256], strides=[1, [1, 2, 2], 2, 2])
    cin, k3 = 2, 27
    plain = count_parameters(_meta("plain_unet", 3, cin, 3, **kw))
    ne = count_parameters(_meta("neunet", 3, cin, 3, **kw))
    feats, strides = kw["features_per_stage"], [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)]
    delta = 0
    for s in range(1, 4):  # decoder upsampling from stage s to s - 1
        r = math.prod(strides[s])
        delta += (feats[s] * feats[s - 1] * r * k3 + feats[s - 1] * r) - (feats[s] * feats[s - 1] * r + feats[s - 1])
    bands = {1: cin * 4, 2: cin * 8}  # level 1 halves 2 axes, level 2 all 3
    delta += sum(bands[s - 1] * feats[s] * k3 for s in (2, 3))
    assert ne - plain == delta
