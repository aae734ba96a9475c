"""Tests of the window-attention transformer U-Nets (CSWin-UNet, DS-TransUNet; issue 17): parameter counts
against the official code, counted by hand layer by layer from the reference files (neither paper's printed
figure could be read from the stored material, so ``paper_params`` is None and the entries say whose count
is used), the metadata contract, and what the generic tests over ``list_models()`` cannot see: the
cross-shaped stripes against a plain attention, CARAFE's reassembly, the token grid sized by the training
patch, odd patches, the deep-supervision resolutions.

PARAMETER_SNAPSHOTS are our own exact counts: they flag a changed layout and are no evidence of correctness.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from paper_counts import assert_matches_paper

from unetkit.models import count_parameters, create_model, model_info, model_patch

WINDOW_TRANSFORMERS = ("cswin_unet", "ds_transunet")
TAGS = {"cnn", "transformer", "hybrid", "mamba", "rwkv", "mlp", "kan", "xlstm", "attention", "residual", "dense",
        "multiscale", "nested", "recurrent", "lightweight", "pretrainable-encoder"}


def _meta(name: str, cin: int, ncls: int, **kwargs: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, 2, cin, ncls, deep_supervision=model_info(name).deep_supervision, **kwargs)


# ---------------------------------------------------------------- hand counts of the official code
def _cswin_official_count(in_channels: int, classes: int) -> int:
    """eatbeanss/CSWin-UNet ``CSWinTransformer`` with ``cswin_tiny_224_lite.yaml`` (embedding 64, depths
    1, 2, 9, 1), summed module by module from ``networks/cswin_unet.py``."""
    def block(d: int) -> int:  # norm1, qkv (bias), LePE depth-wise 3x3 (bias) over all channels, proj, norm2, MLP 4d
        return 2 * d + (3 * d * d + 3 * d) + 10 * d + (d * d + d) + 2 * d + (8 * d * d + 5 * d)

    def carafe(d: int, out: int, scale: int) -> int:  # down 1x1 to d/4, 3x3 kernel encoder, out 1x1
        return (d * (d // 4) + d // 4) + ((d // 4) * scale ** 2 * 9 * 9 + scale ** 2 * 9) + (d * out + out)

    dims, depths = [64, 128, 256, 512], [1, 2, 9, 1]
    embed = in_channels * 64 * 49 + 64 + 2 * 64  # stage1_conv_embed: 7x7 conv + layer norm
    blocks = 2 * sum(n * block(d) for n, d in zip(depths, dims))  # encoder stages and stage_up mirrors
    merges = sum(18 * d * d + 2 * d + 4 * d for d in dims[:3])  # 3x3 stride-2 conv to 2d + layer norm
    upsampling = carafe(512, 256, 2) + carafe(256, 128, 2) + carafe(128, 64, 2) + carafe(64, 64, 4)
    concat_linears = sum(2 * d * d + d for d in dims[:3])
    return embed + blocks + merges + 2 * 512 + upsampling + concat_linears + 2 * 64 + 64 * classes


def _ds_transunet_official_count(in_channels: int, classes: int) -> int:
    """TianBaoGe/DS-TransUNet ``UNet(128, n_class)``, summed module by module from ``lib/DS_TransUNet.py``
    and ``utils/module.py``."""
    def swin_block(d: int, heads: int) -> int:  # norms, relative-position table (13 x 13), qkv, proj, MLP 4d
        return 4 * d + 169 * heads + (3 * d * d + 3 * d) + (d * d + d) + (8 * d * d + 5 * d)

    def swin(embed: int, depths: list[int], heads: list[int], patch: int) -> int:
        dims = [embed * 2 ** i for i in range(4)]
        blocks = sum(n * swin_block(d, h) for n, d, h in zip(depths, dims, heads))
        merging = sum(8 * d + 8 * d * d for d in dims[:3])  # layer norm over 4d, bias-free linear 4d -> 2d
        return in_channels * embed * patch ** 2 + embed + 2 * embed + blocks + merging + sum(2 * d for d in dims)

    def tif(f: int, c: int) -> int:  # Cross_Att: transformer_l (1 x 64, MLP 256), transformer_s (3 x 32, MLP 128)
        fine = 4 * f + 192 * f + (64 * f + f) + (256 * f + 256 + 256 * f + f)
        coarse = 4 * c + 288 * c + (96 * c + c) + (128 * c + 128 + 128 * c + c)
        return fine + coarse + 2 * f + 2 * c + (f * c + c) + (c * f + f)

    def change(f: int, c: int) -> int:  # Conv_block: two 3x3 convs with group norm
        return (9 * (f + c) * f + f + 2 * f) + (9 * f * f + f + 2 * f)

    def swin_decoder(d: int, heads: int) -> int:  # up_conv, 2 Swin blocks at d/2, two 1x1 to d/4, 3x3 fuse
        h, q = d // 2, d // 4
        return (9 * d * h + h + 2 * h) + 2 * swin_block(h, heads) + 2 * (h * q + q) + (9 * h * h + h)

    def decoder(cin: int, out: int) -> int:  # up_conv to out, 3x3 conv over 2 * out
        return (9 * cin * out + out + 2 * out) + (9 * 2 * out * out + out)

    total = swin(128, [2, 2, 18, 2], [4, 8, 16, 32], 4) + swin(96, [2, 2, 6, 2], [3, 6, 12, 24], 8)
    total += sum(tif(128 * 2 ** i, 96 * 2 ** i) + change(128 * 2 ** i, 96 * 2 ** i) for i in range(4))
    total += swin_decoder(1024, 8) + swin_decoder(512, 4) + swin_decoder(256, 2) + decoder(128, 64) + decoder(64, 32)
    total += (in_channels * 32 + 32) + (9 * 32 * 64 + 64 + 128) + (9 * 64 * 64 + 64 + 128)  # down1, down2
    return total + (32 + 1) * classes + (128 + 1) * classes + (1024 + 1) * classes  # final, loss2, loss1 heads


# (name, in_channels, classes, kwargs, reference count, source)
OFFICIAL_COUNTS: list[tuple[str, int, int, dict[str, Any], int, str]] = [
    ("cswin_unet", 3, 9, {}, _cswin_official_count(3, 9),
     ("no printed figure reached (arXiv:2407.18070's tables were not readable here); official code "
      "eatbeanss/CSWin-UNet, cswin_tiny_224_lite.yaml, 3 in, 9 classes (Synapse), 224x224: 23,568,492")),
    ("ds_transunet", 3, 1, {}, _ds_transunet_official_count(3, 1),
     ("no printed figure reached (arXiv:2106.06716's tables were not readable here); official code "
      "TianBaoGe/DS-TransUNet UNet(128, 1), Swin-B 4x4 + Swin-T 8x8 encoders, 3 in, 1 class: 171,441,329")),
]


def test_hand_counts_are_the_figures_in_the_metadata() -> None:
    assert _cswin_official_count(3, 9) == 23_568_492
    assert _ds_transunet_official_count(3, 1) == 171_441_329
    for name, *_, count, _ in OFFICIAL_COUNTS:
        assert f"{count:,}" in model_info(name).extra["paper_setup"]


@pytest.mark.parametrize("case", OFFICIAL_COUNTS, ids=[c[0] for c in OFFICIAL_COUNTS])
def test_parameter_count_matches_official_code(case: tuple) -> None:
    name, cin, ncls, kwargs, reference, source = case
    assert_matches_paper(count_parameters(_meta(name, cin, ncls, **kwargs)), f"{reference:,}", 0.0, f"{name} ({source})")


# Snapshots of our own exact counts (1 in, 2 classes, defaults): not evidence, a change detector.
PARAMETER_SNAPSHOTS: list[tuple[str, int]] = [
    ("cswin_unet", 23_561_772),
    ("ds_transunet", 171_426_068),
]


@pytest.mark.parametrize("name,snapshot", PARAMETER_SNAPSHOTS)
def test_parameter_count_snapshot(name: str, snapshot: int) -> None:
    assert count_parameters(_meta(name, 1, 2)) == snapshot


@pytest.mark.parametrize("name", WINDOW_TRANSFORMERS)
def test_metadata_contract(name: str) -> None:
    info = model_info(name)
    extra = info.extra
    assert extra["tags"] and set(extra["tags"]) <= TAGS
    assert extra["paper_params"] is None and "official code" in extra["paper_setup"]
    assert isinstance(extra["divisible_by"], int) and extra["divisible_by"] >= 1
    kwargs = dict(info.tiny_kwargs)
    if extra.get("patch_kwarg"):
        kwargs[extra["patch_kwarg"]] = model_patch(name, (40, 56))
    assert count_parameters(create_model(name, 2, 1, 2, **kwargs)) <= 2_000_000


# ---------------------------------------------------------------- CSWin-UNet
def test_cswin_divisor_fits_every_stripe_of_the_paper_configuration() -> None:
    """Stripe widths 1, 2, 7 on the 1/4, 1/8, 1/16 grids and four halvings: multiples of 224."""
    from unetkit.models.window_transformer_unets import cswin_divisor
    assert cswin_divisor((1, 2, 7, 7)) == model_info("cswin_unet").extra["divisible_by"] == 224
    assert model_patch("cswin_unet", (320, 256)) == [448, 448]
    with pytest.raises(ValueError, match="multiples of 224"):
        create_model("cswin_unet", 2, 1, 2, img_size=[224, 112])


def test_cswin_block_attention_is_two_stripe_attentions() -> None:
    """With the LePE convolutions zeroed, a CSWin block's attention equals plain softmax attention of half
    the channels (and heads) within each vertical stripe and of the other half within each horizontal one."""
    from unetkit.models.window_transformer_unets import CSWinBlock
    torch.manual_seed(0)
    block = CSWinBlock(8, 4, (4, 6), 2).eval()
    for attn in block.attns:
        torch.nn.init.zeros_(attn.get_v.weight)
        torch.nn.init.zeros_(attn.get_v.bias)
    x = torch.randn(1, 4, 6, 8)
    q, k, v = block.qkv(block.norm1(x)).chunk(3, dim=-1)
    expected = torch.zeros(1, 4, 6, 8)
    for rows, cols, channels in [((slice(0, 4),), (slice(0, 2), slice(2, 4), slice(4, 6)), slice(0, 4)),
                                 ((slice(0, 2), slice(2, 4)), (slice(0, 6),), slice(4, 8))]:
        for r in rows:
            for c in cols:
                def heads(t: torch.Tensor, r: slice = r, c: slice = c, channels: slice = channels) -> torch.Tensor:
                    return t[0, r, c, channels].reshape(-1, 2, 2).transpose(0, 1)  # (n, 4) -> (2 heads, n, 2)
                weights = torch.softmax(heads(q) @ heads(k).transpose(1, 2) / 2 ** 0.5, dim=-1)
                out = (weights @ heads(v)).transpose(0, 1).reshape(expected[0, r, c, channels].shape)
                expected[0, r, c, channels] = out
    with torch.no_grad():
        got = block(x) - x
        want = block.proj(expected)
        want = want + block.mlp(block.norm2(x + want))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_carafe_with_uniform_kernels_is_a_3x3_mean_then_nearest_upsampling() -> None:
    """Kernels predicted as constants (zero encoder weights) are uniform after the softmax: each output
    pixel is the mean of its source pixel's 3x3 neighbourhood (zero padded), then the 1x1 output conv."""
    from unetkit.models.window_transformer_unets import CARAFE
    up = CARAFE(8, 8, scale=2)
    torch.nn.init.zeros_(up.encoder.weight)
    torch.nn.init.zeros_(up.encoder.bias)
    x = torch.randn(2, 8, 5, 7)
    mean = F.avg_pool2d(x, 3, 1, 1, count_include_pad=True)
    expected = up.out(F.interpolate(mean, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(up(x), expected, atol=1e-5, rtol=1e-5)


def test_cswin_pads_smaller_patches_and_refuses_larger_ones() -> None:
    kwargs = {**model_info("cswin_unet").tiny_kwargs, "img_size": [224, 224]}
    model = create_model("cswin_unet", 2, 1, 2, **kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 37, 29)).shape == (1, 2, 37, 29)
        with pytest.raises(ValueError, match="img_size"):
            model(torch.randn(1, 1, 240, 224))


# ---------------------------------------------------------------- DS-TransUNet
def test_ds_transunet_deep_supervision_resolutions_and_odd_patch() -> None:
    """Full resolution, the 1/4 decoder level and the 1/32 bottleneck; a 37 x 29 patch is padded to 64 x 64
    and each output cropped to the patch's share of it."""
    model = create_model("ds_transunet", 2, 1, 2, **model_info("ds_transunet").tiny_kwargs).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 1, 64, 128))
        assert [tuple(o.shape[2:]) for o in outs] == [(64, 128), (16, 32), (2, 4)]
        assert [tuple(o.shape[2:]) for o in model(torch.randn(1, 1, 37, 29))] == [(37, 29), (10, 8), (2, 1)]
        model.deep_supervision = False
        assert model(torch.randn(1, 1, 37, 29)).shape == (1, 2, 37, 29)


def test_tif_global_token_is_the_other_branchs_pooled_projection() -> None:
    """TIF: the coarse branch attends together with the fine branch's pooled, layer-normed, projected token
    (and vice versa); a change of the fine map's mean moves the coarse output only through that token."""
    from unetkit.models.window_transformer_unets import TransformerInteractiveFusion
    torch.manual_seed(0)
    tif = TransformerInteractiveFusion(8, 6).eval()
    fine, coarse = torch.randn(1, 8, 4, 4), torch.randn(1, 6, 2, 2)
    with torch.no_grad():
        e, r = tif(fine, coarse)
        assert e.shape == fine.shape and r.shape == coarse.shape
        shuffled = fine.flatten(2)[..., torch.randperm(16)].view_as(fine)  # same pooled token
        torch.testing.assert_close(tif(shuffled, coarse)[1], r)
        token = tif.fine_to_coarse(tif.fine_norm(fine.flatten(2).transpose(1, 2)).mean(1, keepdim=True))
        alone = tif.coarse_layer(torch.cat((token, coarse.flatten(2).transpose(1, 2)), dim=1))[:, 1:]
        torch.testing.assert_close(r, alone.transpose(1, 2).reshape(coarse.shape))


def test_lepe_is_a_depthwise_convolution_inside_each_stripe() -> None:
    """Zero queries and keys make the attention uniform: each token gets its stripe's mean value plus the
    LePE, a depth-wise 3x3 convolution of the values with zero padding at the stripe's own borders."""
    from unetkit.models.window_transformer_unets import LePEStripeAttention
    torch.manual_seed(0)
    attn = LePEStripeAttention(4, 2, (4, 2))
    v = torch.randn(1, 4, 6, 4)
    zeros = torch.zeros_like(v)
    with torch.no_grad():
        got = attn(zeros, zeros, v)
        for c0 in (0, 2, 4):
            stripe = v[:, :, c0:c0 + 2].permute(0, 3, 1, 2)  # (1, C, 4, 2)
            lepe = F.conv2d(stripe, attn.get_v.weight, attn.get_v.bias, padding=1, groups=4)
            expected = (stripe.mean(dim=(2, 3), keepdim=True) + lepe).permute(0, 2, 3, 1)
            torch.testing.assert_close(got[:, :, c0:c0 + 2], expected, atol=1e-5, rtol=1e-5)
