"""Tests of the U-Bench CNNs with redesigned skip pathways (src/unetkit/models/ubench_cnn_d.py,
issue 17): parameter counts against each paper's printed figure (or, where none could be read, the
official code's count, said so in the entry), the metadata contract, and what the generic tests over
``list_models()`` (tests/test_models.py) cannot see: odd patches and each model's distinctive block.

PAPER_COUNTS entries name the source, its figure as printed and the configuration that gives it;
our count must round to the figure, or lie within the tolerance the entry states with its reason.
PARAMETER_SNAPSHOTS are our own exact counts: they flag a changed layout, nothing more.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from paper_counts import assert_matches_paper

from unetkit.models import count_parameters, create_model, model_info

UBENCH_CNN_D = ("utanet", "gh_unet", "perspective_unet", "cscaunet")


def _meta(name: str, cin: int, ncls: int, **kwargs: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, 2, cin, ncls, deep_supervision=False, **kwargs)


# torchvision's ResNet-34 stem (7x7 conv 3->64, no bias, + BN) and 1000-class classifier: held by the
# official UTANet (self.resnet) but never called by its forward; in its count, not in ours
_UTANET_UNUSED = 3 * 64 * 49 + 2 * 64 + (512 * 1000 + 1000)

# the official GH-UNet's norms that its forward never calls: a BatchNorm (bn4) in each of its six
# multi-kernel blocks (widths 32, 64, 96 and 64, 32, 16) and a LayerNorm (norm2) in each Lo2 block
_GHUNET_UNUSED = 2 * (32 + 64 + 96) + 2 * (64 + 32 + 16) + 2 * (128 + 640 + 128)

# (name, in_channels, classes, kwargs, how the figure counts, figure, relative tolerance, source)
PAPER_COUNTS: list[tuple[str, int, int, dict[str, Any], Any, str, float, str]] = [
    ("utanet", 3, 1, {}, count_parameters, "23,754,433", 0.0,
     ("no figure read from Luo 2025; official code (AshleyLuo001/UTANet UTANet.py + ta_mosc.py, as U-Bench ships "
      "it), 3 in, 1 class, summed by hand: stem 1,920 + ResNet-34 layers 21,275,136 + fuse 32,960 + experts and "
      "gates 134,400 + dockers 34,304 + decoder 2,275,136 + head 577")),
    ("gh_unet", 3, 1, {}, lambda m: count_parameters(m) + _GHUNET_UNUSED, "12,925,173", 0.0,
     ("no figure read from Wang 2025 (its abstract gives only 38% of H2Former's); official code (U-Bench "
      "models/CNN/GH_UNet: GH_UNet.py, module/dp.py, with Hugging Face's MobileViTModel, DySample and HWD), 3 in, "
      "1 class, summed by hand: MobileViT-S (patch 16, 12 heads, expanded output) 4,937,632 + the rest")),
    ("perspective_unet", 3, 9, {}, count_parameters, "112,659,849", 0.0,
     ("no figure in Hu 2024 (arXiv:2406.14052) or its README; official code (tljxyys/Perspective-Unet "
      "networks/perspective_unet.py, as U-Bench ships it), 3 in, 9 classes (Synapse), summed by hand: bi-path "
      "encoder 54,494,784 + ENLTBs 30,320,640 + their down/merge convs 5,247,488 + SCSI 8,811,008 + skip fusions "
      "2,754,304 + decoder 11,026,432 + head 5,193")),
    ("utanet", 3, 1, {}, lambda m: count_parameters(m) + _UTANET_UNUSED, "24,276,969", 0.0,
     "the same, as model.parameters() of the official code sums it (with the unused torchvision stem and fc)"),
]


@pytest.mark.parametrize("case", PAPER_COUNTS, ids=[f"{c[0]}-{i}" for i, c in enumerate(PAPER_COUNTS)])
def test_parameter_count_matches_paper(case: tuple) -> None:
    name, cin, ncls, kwargs, count, printed, tolerance, source = case
    assert_matches_paper(count(_meta(name, cin, ncls, **kwargs)), printed, tolerance, f"{name} ({source})")


# Snapshots of our own exact counts (3 in, 1 class, defaults): not evidence, a change detector.
PARAMETER_SNAPSHOTS: list[tuple[str, int]] = [
    ("utanet", 23_754_433),
    ("gh_unet", 12_922_773),
    ("perspective_unet", 112_655_233),
    ("cscaunet", 35_274_795),
]


@pytest.mark.parametrize("name,snapshot", PARAMETER_SNAPSHOTS)
def test_parameter_count_snapshot(name: str, snapshot: int) -> None:
    assert count_parameters(_meta(name, 3, 1)) == snapshot


@pytest.mark.parametrize("name", UBENCH_CNN_D)
def test_tiny_instance_is_small_and_any_patch_comes_back_at_its_size(name: str) -> None:
    """(Tags, figures and divisors: tests/test_models_catalog.py.) Every model here pads to its
    multiple and crops, so a 37 x 29 patch comes back as 37 x 29; the count is the official code's."""
    info = model_info(name)
    assert info.extra["pads_input"] and info.extra["paper_params"] is None
    assert "official code" in info.extra["paper_setup"]
    torch.manual_seed(0)
    model = create_model(name, 2, 1, 2, deep_supervision=False, **info.tiny_kwargs).eval()
    assert count_parameters(model) <= 2_000_000
    with torch.no_grad():
        assert model(torch.randn(1, 1, 37, 29)).shape == (1, 2, 37, 29)


def test_utanet_router_sums_its_top_two_experts_with_renormalized_weights() -> None:
    """Hand-worked routing: every expert computed on every image, then each router's output is the
    top-2 experts by softmax(pooled @ gate), weighted by a softmax over those two scores."""
    from unetkit.models.ubench_cnn_d import MixtureOfSkipExperts
    torch.manual_seed(0)
    moe = MixtureOfSkipExperts(8, n_experts=4, n_routes=2, top_k=2).eval()
    x = torch.randn(3, 8, 5, 4)
    with torch.no_grad():
        routed = moe(x)
        every = torch.stack([expert(x) for expert in moe.experts], dim=1)  # (B, E, C, H, W)
        for gate, out in zip(moe.gates, routed):
            scores = F.softmax(x.mean(dim=(2, 3)) @ gate, dim=1)
            for b in range(3):
                top = scores[b].argsort(descending=True)[:2]
                w = F.softmax(scores[b, top], dim=0)
                torch.testing.assert_close(out[b], w[0] * every[b, top[0]] + w[1] * every[b, top[1]])


def test_utanet_balanced_utilization_trains_every_expert() -> None:
    """One image picks two experts per router; in training the unused experts still run (on a random
    row) and receive gradients; in evaluation they do not."""
    from unetkit.models.ubench_cnn_d import MixtureOfSkipExperts
    torch.manual_seed(0)
    moe = MixtureOfSkipExperts(8, n_experts=4, n_routes=1, top_k=2)
    x = torch.randn(1, 8, 4, 4)
    sum(o.sum() for o in moe(x)).backward()
    assert all(e[0].weight.grad is not None and e[0].weight.grad.abs().sum() > 0 for e in moe.experts)
    moe.zero_grad(set_to_none=True)
    moe.eval()
    sum(o.sum() for o in moe(x)).backward()
    assert sum(e[0].weight.grad is not None for e in moe.experts) == 2


def test_perspective_enla_equals_the_quadratic_kernel_attention_it_factorizes() -> None:
    """ENLA computes ``phi(q) (phi(k)^T v) / (phi(q) sum_j phi(k_j))`` in linear time; written out as a
    (N x N) attention matrix ``A = phi(q) phi(k)^T`` normalized per row, the result is the same."""
    from unetkit.models.ubench_cnn_d import (
        EfficientNonLocalAttention,
        softmax_kernel_features,
    )
    torch.manual_seed(0)
    attn = EfficientNonLocalAttention(8).eval()
    q, k = (F.normalize(torch.randn(2, 11, 8), dim=-1) for _ in range(2))
    v = torch.randn(2, 11, 8)
    fq, fk = softmax_kernel_features(q, attn.projection), softmax_kernel_features(k, attn.projection)
    weights = fq @ fk.transpose(1, 2)
    expected = (weights / weights.sum(dim=-1, keepdim=True)) @ v
    torch.testing.assert_close(attn(q, k, v), expected)


def test_perspective_random_features_are_orthogonal_rows_with_gaussian_norms() -> None:
    from unetkit.models.ubench_cnn_d import orthogonal_random_features
    w = orthogonal_random_features(6, 6, torch.Generator().manual_seed(0))
    gram = w @ w.t()
    torch.testing.assert_close(gram - torch.diag(torch.diagonal(gram)), torch.zeros(6, 6), atol=1e-5, rtol=0)
    assert w.shape == (6, 6) and (torch.diagonal(gram) > 0).all()


def test_perspective_image_output_does_not_depend_on_the_rest_of_the_batch() -> None:
    """The SCSI attends over each image's tokens (the official code's sequence-first attention on a
    batch-first tensor would attend across the images of a batch instead)."""
    torch.manual_seed(0)
    model = create_model("perspective_unet", 2, 1, 2, **model_info("perspective_unet").tiny_kwargs).eval()
    x = torch.randn(3, 1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:1], model(x[:1]), atol=1e-5, rtol=1e-4)


def test_csca_double_squeeze_excite_by_hand() -> None:
    """DSE: scale by the SE of the channel means, then by the SE of the recalibrated map's maxima."""
    from unetkit.models.ubench_cnn_d import DoubleSqueezeExcite
    torch.manual_seed(0)
    dse = DoubleSqueezeExcite(4, decay=2)
    x = torch.randn(2, 4, 3, 5)
    first = x * dse.on_mean(x.mean(dim=(2, 3), keepdim=True))
    torch.testing.assert_close(dse(x), first * dse.on_max(first.amax(dim=(2, 3), keepdim=True)))


def test_csca_spatial_attention_is_a_matrix_product_of_square_maps() -> None:
    """``(Q * K) @ V`` multiplies each channel's H x W maps as matrices (rows of one, columns of the other)."""
    from unetkit.models.ubench_cnn_d import CompoundSpatialAttention
    torch.manual_seed(0)
    att = CompoundSpatialAttention(8).eval()
    low, high = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        qk = att.query(low) * att.key(low)
        v = att.value(high)
        by_hand = torch.stack([qk[0, c] @ v[0, c] for c in range(4)])[None]
        torch.testing.assert_close(att(low, high), att.out(by_hand))


def test_csca_non_square_patch_is_padded_to_a_square_and_sides_are_coarser_levels() -> None:
    torch.manual_seed(0)
    model = create_model("cscaunet", 2, 1, 2, deep_supervision=True, **model_info("cscaunet").tiny_kwargs).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 1, 64, 32))
    assert [tuple(o.shape[2:]) for o in outs] == [(64, 32), (32, 16), (16, 8), (8, 4), (4, 2), (2, 1)]


def test_gh_unet_channel_roll_is_torch_roll_per_channel() -> None:
    from unetkit.models.ubench_ghunet import roll_each_channel
    x = torch.randn(2, 5, 4, 6)
    for dim in (2, 3):
        for sign in (1, -1):
            expected = torch.cat([torch.roll(x[:, c:c + 1], sign * c, dim) for c in range(5)], dim=1)
            torch.testing.assert_close(roll_each_channel(x, dim, sign), expected)


def test_gh_unet_dysample_without_offsets_is_bilinear_upsampling() -> None:
    """At zero predicted offsets DySample samples at the regular sub-pixel positions (+-1/4 pixel for
    scale 2): bilinear x2 with align_corners=False, edges clamped."""
    from unetkit.models.ubench_ghunet import DynamicUpsample
    up = DynamicUpsample(8, scale=2)
    torch.nn.init.zeros_(up.offset.weight)
    x = torch.randn(2, 8, 5, 7)
    expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up(x), expected, atol=1e-5, rtol=1e-5)
