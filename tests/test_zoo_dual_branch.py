"""Tests of FAT-Net and MSRF-Net (issue 17, src/unetkit/models/ubench_dual_branch.py): parameter
counts against the reference code's, summed by hand (neither paper prints one we could read), the
metadata contract, and what the generic tests over ``list_models()`` (tests/test_models.py) cannot
see: the DSDF block's exchange schedule, FAM's weight sharing, padded and refused patches,
deep-supervision resolutions.

PAPER_COUNTS entries name the source of the figure and the configuration that gives it; our count
must equal it. PARAMETER_SNAPSHOTS are our own exact counts: they flag a changed layout, nothing more.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from paper_counts import assert_matches_paper

from unetkit.models import count_parameters, create_model, model_info

DUAL_BRANCH = ("fatnet", "msrfnet")


def _meta(name: str, cin: int, ncls: int, **kwargs: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, 2, cin, ncls, deep_supervision=False, **kwargs)


# The official FAT-Net (SZUcsh/FAT-Net FAT_Net.py, as U-Bench's models/CNN/FAT_Net ships it), FAT_Net(3, 1),
# summed by hand: torchvision ResNet-34 conv1 + bn1 + layer1-4 21,284,672; DeiT-tiny patch embedding
# 147,648 + 12 blocks x 444,864 = 5,486,016; 1x1 192->512, SE(1024, r 16, no bias), 1x1 1024->512
# 754,688; FAM blocks 64/128/256 861,056; decoder4-2 325,248; final transposed conv + two convs 42,337;
# decoder1, built and never called, 4,640 (not built in ours: added back below)
FATNET_OFFICIAL_COUNT = "28,758,657"
FATNET_UNUSED_DECODER = 64 * 16 + 16 + 2 * 16 + 16 * 16 * 9 + 16 + 2 * 16 + 16 * 64 + 64 + 2 * 64

# U-Bench's models/CNN/MSRFNet/MSRFNet.py (the amlarraz/MSRF-Net_PyTorch port), MSRF(3, 1), init_feat
# 32, summed by hand layer by layer:
#   encoder 1,176,142 (convs 3->32->32, 32->64->64, 64->128->128, 128->256->256 with biases, four BNs,
#     SE 32/64/128 with hidden 2/4/8 and biases);
#   DSDF blocks 19,853,568 = 4 x 261,472 (32/64, growth 16) + 4 x 4,179,328 (128/256, growth 64)
#     + 2 x 1,045,184 (64/128, growth 32);
#   shape stream 47,023; decoder stage 1/4 1,119,760 and 1/2 256,076 (heads included); full stage 53,505
MSRF_UBENCH_COUNT = "22,506,074"

# (name, in_channels, classes, kwargs, parameters not built in ours, figure as printed, relative
#  tolerance, source)
PAPER_COUNTS: list[tuple[str, int, int, dict[str, Any], int, str, float, str]] = [
    ("fatnet", 3, 1, {}, FATNET_UNUSED_DECODER, FATNET_OFFICIAL_COUNT, 0.0,
     ("no figure read from Wu 2022; official code (FAT_Net.py), 3 in, 1 class, ResNet-34 + DeiT-tiny, with the "
      "decoder block its forward never calls")),
    ("msrfnet", 3, 1, {}, 0, MSRF_UBENCH_COUNT, 0.0,
     "no figure found in Srivastava 2022; U-Bench's PyTorch port (MSRFNet.py), 3 in, 1 class, widths 32..256"),
]


@pytest.mark.parametrize("case", PAPER_COUNTS, ids=[f"{c[0]}-{i}" for i, c in enumerate(PAPER_COUNTS)])
def test_parameter_count_matches_reference(case: tuple) -> None:
    name, cin, ncls, kwargs, not_built, printed, tolerance, source = case
    count = count_parameters(_meta(name, cin, ncls, **kwargs)) + not_built
    assert_matches_paper(count, printed, tolerance, f"{name} ({source})")


# Snapshots of our own exact counts (1 in, 2 classes, defaults; tiny): not evidence, a change detector.
PARAMETER_SNAPSHOTS: list[tuple[str, dict[str, Any], int]] = [
    ("fatnet", {}, 28_649_730),
    ("fatnet", dict(model_info("fatnet").tiny_kwargs), 26_218),
    ("msrfnet", {}, 22_505_732),
    ("msrfnet", {"base_width": 8}, 1_410_497),
]


@pytest.mark.parametrize("name,kwargs,snapshot", PARAMETER_SNAPSHOTS)
def test_parameter_count_snapshot(name: str, kwargs: dict[str, Any], snapshot: int) -> None:
    assert count_parameters(_meta(name, 1, 2, **kwargs)) == snapshot


@pytest.mark.parametrize("name", DUAL_BRANCH)
def test_reference_is_named_and_tiny_model_is_small(name: str) -> None:
    """The catalogue tests (tests/test_models_catalog.py) hold the metadata keys; here: without a
    printed figure the setup names the code counted instead, and the tiny model stays small."""
    info = model_info(name)
    assert info.extra["paper_params"] is None and "official code" in info.extra["paper_setup"]
    assert count_parameters(create_model(name, 2, 1, 2, deep_supervision=False, **info.tiny_kwargs)) <= 2_000_000


def test_msrfnet_refuses_patches_that_are_no_multiple_of_8() -> None:
    model = create_model("msrfnet", 2, 1, 2, deep_supervision=False, base_width=8).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="multiple of 8"):
        model(torch.randn(1, 1, 36, 40))


def test_msrfnet_deep_supervision_heads_sit_at_one_half_and_one_quarter() -> None:
    model = create_model("msrfnet", 2, 3, 4, deep_supervision=True, base_width=8).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 48))
    assert [tuple(o.shape[2:]) for o in outs] == [(32, 48), (16, 24), (8, 12)]


def test_dsdf_exchange_schedule_and_scaled_residual() -> None:
    """Hand-worked check of the DSDF block: with every layer's weights zero and biases set, each
    dense layer outputs LeakyReLU(bias), so the block returns ``x + 0.4 * LeakyReLU(b_out)``; and the
    exchanges resample the block input, then the first, third and fourth layer's outputs (seen
    through which tensors reach the down/up convs)."""
    from unetkit.models.ubench_dual_branch import DualScaleDenseFusion

    block = DualScaleDenseFusion(4, 8, growth=2)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
        block.x_out[0].bias.fill_(-1.0)  # LeakyReLU(0.25)(-1) = -0.25
        block.y_out[0].bias.fill_(2.0)
    x, y = torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4)
    seen: list[int] = []
    for down in block.down:
        down.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[1]))
    # mark the dense outputs by their values: layer k's bias k + 1 (LeakyReLU keeps positives)
    with torch.no_grad():
        for k, layer in enumerate(block.x_layers):
            layer[0].bias.fill_(k + 1.0)
    inputs: list[float] = []
    for down in block.down:
        down.register_forward_hook(lambda m, inp, out: inputs.append(float(inp[0].detach().mean())))
    out_x, out_y = block(x, y)
    torch.testing.assert_close(out_x, x + 0.4 * -0.25)
    torch.testing.assert_close(out_y, y + 0.4 * 2.0)
    assert seen == [4, 2, 2, 2]  # the input (4 channels), then growth-wide layer outputs
    assert inputs[0] == pytest.approx(float(x.mean()), abs=1e-6)
    assert inputs[1:] == [1.0, 3.0, 4.0]  # outputs of layers 1, 3 and 4


def test_fatnet_pads_any_patch_and_crops_the_logits() -> None:
    model = create_model("fatnet", 2, 3, 2, **model_info("fatnet").tiny_kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 29)).shape == (1, 2, 37, 29)
        assert model(torch.randn(1, 3, 64, 48)).shape == (1, 2, 64, 48)


def test_fatnet_feature_adaptation_shares_one_set_of_weights_across_repeats() -> None:
    """FAM applied n times is one block's map composed n times (the official code lists one block
    instance n times): same parameters whatever n, and two repeats equal the block applied twice."""
    from unetkit.models.ubench_dual_branch import FeatureAdaptation

    torch.manual_seed(0)
    once, twice = FeatureAdaptation(4, 1), FeatureAdaptation(4, 2)
    twice.load_state_dict(once.state_dict())
    assert count_parameters(once) == count_parameters(twice) == 4 * 4 * 9 + 4 + 4 * 4 + 4
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(twice(x), once(once(x)))
        y = torch.relu(once.conv3(x)) + torch.relu(once.conv1(x))
        torch.testing.assert_close(once(x), y)


def test_fatnet_transformer_branch_meets_the_cnn_at_one_sixteenth() -> None:
    model = create_model("fatnet", 2, 1, 2, **model_info("fatnet").tiny_kwargs).eval()
    x = torch.randn(1, 1, 64, 96)
    with torch.no_grad():
        tokens = model.transformer(x)
        deepest = model.cnn(x)[-1]
    assert tokens.shape[2:] == deepest.shape[2:] == (4, 6)
