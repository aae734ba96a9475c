"""U-Bench CNN variants (ubench_cnn_c_*): CA-Net, ERDUnet. Parameter counts against the official codes' layouts
(neither paper's count could be read: see each entry), and the pieces the generic tests over ``list_models()``
cannot see (the scale attention's per-level weights, the non-local block's start as identity, odd patches).

Each reference count is computed here by hand from the official code's layer list (not from our model), for
the configuration the official code builds: CA-Net ``Comprehensive_Atten_Unet`` (HiLab-git/CA-Net, 3 in,
2 classes, feature_scale 4).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from unetkit.models import count_parameters, create_model, model_info
from unetkit.models.ubench_cnn_c_attention import NonLocalBlock, ScaleAttention


def _meta(name: str, dims: int, cin: int, ncls: int, **kw: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, dims, cin, ncls, deep_supervision=False, **kw)


def _conv(cin: int, cout: int, k: int = 3, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _bn(c: int) -> int:
    return 2 * c


def canet_official_count(cin: int = 3, classes: int = 2) -> int:
    """``Comprehensive_Atten_Unet`` (feature_scale 4), layer by layer as the official modules declare them."""
    f = [16, 32, 64, 128, 256]

    def conv_block(a: int, b: int) -> int:  # conv_block: 2 x (3x3 conv with bias, BN, ReLU)
        return _conv(a, b) + _bn(b) + _conv(b, b) + _bn(b)

    def grid_gate(x: int, g: int) -> int:  # GridAttentionBlock2D, inter = x, sub-sample (1, 1): W, theta, phi, psi
        return _conv(x, x, 1) + _bn(x) + _conv(x, x, 1) + _conv(g, x, 1) + _conv(x, 1, 1)

    def se_conv_block(inplanes: int, planes: int) -> int:  # SE_Conv_Block: convs without bias, fc1/fc2, downchannel
        r = round(planes / 2)
        return (_conv(inplanes, planes, 3, False) + _bn(planes) + _conv(planes, 2 * planes, 3, False)
                + _bn(2 * planes) + _conv(2 * planes, planes, 3, False) + _bn(planes)
                + (2 * planes * r + r) + (r * 2 * planes + 2 * planes)
                + _conv(inplanes, 2 * planes, 1, False) + _bn(2 * planes))

    encoder = sum(conv_block(a, b) for a, b in zip([cin] + f[:-1], f))
    gates = sum(2 * grid_gate(x, g) + _conv(2 * x, x, 1) + _bn(x) for x, g in ((32, 64), (64, 128)))
    nonlocal_block = 3 * _conv(256, 64, 1) + _conv(64, 256, 1) + _bn(256)  # g, theta, phi; W + BN
    up = sum(a * b * 4 + b for a, b in ((256, 128), (128, 64), (64, 32), (32, 16)))  # 2x2 transposed convs
    decoder = sum(se_conv_block(2 * p, p) for p in (128, 64, 32, 16))
    dsv = sum(_conv(c, 4, 1) for c in (128, 64, 32, 16))
    # scale_atten_convblock(16, 4): conv3 + bn3, ChannelGate MLP 16-4-16, SpatialAtten 3x3 (BN) and 1x1, no biases
    scale = (_conv(16, 4, 3, False) + _bn(4) + (16 * 4 + 4 + 4 * 16 + 16)
             + _conv(16, 4, 3, False) + _bn(4) + _conv(4, 4, 1, False))
    return encoder + gates + nonlocal_block + up + decoder + dsv + scale + _conv(4, classes, 1)


def test_canet_count_equals_the_official_layout() -> None:
    official = canet_official_count()
    assert official == 2_785_610 == model_info("canet").extra["reference_params"]
    assert count_parameters(_meta("canet", 2, 3, 2)) == official
    assert model_info("canet").extra["paper_params"] is None


def test_canet_parameter_snapshot() -> None:
    """Snapshot (not a reference): 1 in / 2 classes, the catalogue's configuration."""
    assert count_parameters(_meta("canet", 2, 1, 2)) == canet_official_count(cin=1) == 2_785_322


def test_scale_attention_by_hand() -> None:
    """With zero MLP and zero spatial convs every scale weight is sigmoid(0) = 1/2 and every spatial map
    sigmoid(ReLU(0)) = 1/2, so before the fusion conv the block computes ReLU(x/4 + x/2 + x) = 1.75 ReLU(x)."""
    block = ScaleAttention(levels=4, per_level=4, out=4).eval()
    for module in (*block.mlp, block.spatial[0], block.spatial[3]):
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.zeros_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    block.fuse = nn.Identity()
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        assert torch.allclose(block(x), 1.75 * torch.relu(x), atol=1e-6)


def test_scale_attention_weights_whole_levels() -> None:
    """The scale weight is one number per level: scaling the MLP's output within a level (4 channels) changes
    nothing but that level's weight; checked by giving level 2 a large bias: only its 4 channels grow."""
    block = ScaleAttention(levels=4, per_level=4, out=4).eval()
    nn.init.zeros_(block.mlp[2].weight)
    nn.init.zeros_(block.mlp[2].bias)
    nn.init.zeros_(block.spatial[3].weight)  # spatial maps all 1/2
    block.fuse = nn.Identity()
    x = torch.rand(1, 16, 4, 4) + 0.1
    with torch.no_grad():
        base = block(x)
        block.mlp[2].bias[8:12] = 20.0  # level 2: scale weight -> sigmoid(40) = 1
        boosted = block(x)
    changed = ~torch.isclose(base, boosted).flatten(2).all(dim=2)[0]
    assert changed.tolist() == [False] * 8 + [True] * 4 + [False] * 4
    assert torch.allclose(boosted[:, 8:12], 2.5 * x[:, 8:12], atol=1e-5)  # x + x/2 + x (scale 1, spatial 1/2)


def test_nonlocal_block_starts_as_identity_and_sees_the_whole_map() -> None:
    block = NonLocalBlock(8, 2).eval()
    x = torch.randn(1, 8, 6, 8)
    with torch.no_grad():
        assert torch.equal(block(x), x)  # output BN starts at zero
        block.out[1].weight.fill_(1.0)
        y = block(x)
        x2 = x.clone()
        x2[..., 5, 7] += 10.0  # a far corner changes the response at the opposite corner
        assert not torch.allclose(block(x2)[..., 0, 0], y[..., 0, 0])


@pytest.mark.parametrize("patch", [(40, 57), (33, 70)])
def test_canet_odd_patches(patch: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = create_model("canet", 2, 1, 3, **model_info("canet").tiny_kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, *patch)).shape == (1, 3, *patch)
