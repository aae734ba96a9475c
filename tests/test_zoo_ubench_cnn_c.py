"""U-Bench CNN variants (ubench_cnn_c_*): CA-Net, ERDUnet. Parameter counts against the official codes' layouts
(neither paper's count could be read: see each entry), and the pieces the generic tests over ``list_models()``
cannot see (the scale attention's per-level weights, the non-local block's reach, the region attention's
frozen projections, odd patches).

Each reference count is computed here by hand from the official code's layer list (not from our model), for
the configuration the official code builds: CA-Net ``Comprehensive_Atten_Unet`` (HiLab-git/CA-Net, 3 in,
2 classes, feature_scale 4); ERDUnet ``ERDUnet`` (caijilia/ERDUnet, = U-Bench's copy, 3 in, 1 class).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from unetkit.models import count_parameters, create_model, model_info
from unetkit.models.ubench_cnn_c_attention import NonLocalBlock, ScaleAttention
from unetkit.models.ubench_cnn_c_erdunet import (
    RegionDifferenceAttention,
    TripleAttention,
)


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


def test_nonlocal_block_sees_the_whole_map() -> None:
    torch.manual_seed(0)
    block = NonLocalBlock(8, 2).eval()
    x = torch.randn(1, 8, 6, 8)
    with torch.no_grad():
        y = block(x)
        x2 = x.clone()
        x2[..., 5, 7] += 10.0  # a far corner changes the response at the opposite corner
        assert not torch.allclose(block(x2)[..., 0, 0], y[..., 0, 0])


# ------------------------------------------------------------------------------------------- ERDUnet
def _erd_conv(cin: int, cout: int, k: int, norm: bool = False) -> int:  # the official ``Conv`` (bias, optional BN)
    return _conv(cin, cout, k) + (_bn(cout) if norm else 0)


def erdunet_official_count(cin: int = 3, classes: int = 1) -> tuple[int, int]:
    """``ERDUnet`` as the official file declares it: (all parameters, those that can never reach the output).

    Dead: the auxiliary heads ``final_x`` and ``final_1`` (their maps are dropped); ``DRA``'s ``to_class_1/2``
    and ``region_learn`` in simple mode; ``IRE``'s spatial conv and ``fc3/fc4`` with ``only_ch=1``, its
    ``fc3/fc4`` with ``only_sp=1``; ``CEE``'s ``dwconv_1`` always (its output is overwritten), with
    ``smaller=0`` also ``att``, ``proj_c`` and ``dwconv_2``, with ``smaller=1`` its ``fc1`` and (``use_att=0``)
    ``att``. The learned-mode ``to_class_1/2`` are live but untrainable: counted as live (ours keeps them, frozen)."""
    def basic(a: int, b: int) -> int:
        shortcut = _conv(a, b, 1, False) + _bn(b) if a != b else 0
        return _conv(a, b, 3, False) + _bn(b) + _conv(b, b, 3, False) + _bn(b) + shortcut

    trunk = _conv(cin, 64, 7, False) + _bn(64) + sum(
        basic(a if j == 0 else w, w) for a, w, n in ((64, 64, 3), (64, 128, 4), (128, 256, 6)) for j in range(n))

    def dra(c: int, simple: bool) -> tuple[int, int]:
        to_class, region = 2 * _conv(c, classes, 1), _conv(classes, 1, 1) + _bn(1)
        return _conv(c, c, 1) + _bn(c) + to_class + region, (to_class + region) if simple else 0

    def ire(c: int, rate: int, only: str = "") -> tuple[int, int]:
        h = int(c / rate)
        channel, spatial, pixel = _conv(c, h, 1) + _conv(h, c, 1), 7 * 7 * 2 + _bn(1), _conv(c, h, 1) + _conv(h, c, 1)
        dead = {"": 0, "ch": spatial + pixel, "sp": pixel}[only]
        return channel + spatial + pixel, dead

    def mra(c1: int, c2: int, e: int) -> tuple[int, int]:
        edge = dra(e, simple=True)
        return _conv(c1, e, 1) + _conv(c2, e, 1) + _conv(3 * e, e, 1) + _bn(e) + edge[0], edge[1]

    def pfc(a: int, c: int) -> int:
        return _conv(a, c, 7) + _bn(c) + c * 49 + c + _bn(c) + _conv(c, c, 1) + _bn(c)

    def cee(a: int, c: int, smaller: bool, use_att: bool) -> tuple[int, int]:
        att = ire(c, 4)[0]
        proj, proj_c = _conv(a, c, 3) + _conv(c, c, 1), _conv(a, c, 3) + _conv(c, c, 1) + _bn(c)
        dwconv = dwconv_1 = 10 * c
        dwconv_2 = 2 * c * 9 + c + 2 * (_conv(c, c, 1) + _bn(c))
        fc0, turn, fc1 = _erd_conv(c, c, 3, True), _conv(2 * c, c, 1) + _bn(c), c * c + c
        total = att + proj + proj_c + 2 * c + dwconv + fc0 + dwconv_1 + dwconv_2 + turn + fc1
        dead = dwconv_1 + (0 if use_att else att) + (fc1 if smaller else proj_c + dwconv_2)
        return total, dead

    final_aux = _erd_conv(256, 64, 1, True) + _erd_conv(64, 64, 3, True) + _erd_conv(64, classes, 3)
    parts = [(trunk, 0), (2 * final_aux, 2 * final_aux),
             (_erd_conv(32, 16, 3, True) + _erd_conv(16, classes, 3) + 2 * _erd_conv(32, 16, 3), 0),  # final_2, final_net_1/2
             mra(64, 128, 256), ire(256, 4), ire(256, 4), (2 * _bn(256), 0), (pfc(cin, 16), 0),
             (_conv(256, 128, 1) + _bn(128) + _conv(128, 64, 1) + _bn(64) + _conv(64, 32, 1) + _bn(32), 0),  # out_1..3
             ire(128, 4), (_bn(128), 0), ire(64, 4), (_bn(64), 0),  # out_1_skip, out_2_skip
             dra(256, True), dra(128, False), dra(64, False), dra(32, True),  # skip_0_1, skip_1_1, skip_2_1, skip_3
             (pfc(64, 32), 0), cee(32, 64, False, False), cee(64, 128, True, True),  # layer_0, layer_0_1, layer_1_1
             ire(16, 4, "sp"), cee(16, 32, True, False), cee(32, 64, True, False), cee(64, 128, True, False),
             mra(32, 64, 128), ire(128, 4), ire(128, 4), (2 * _bn(128), 0),  # head_2, att_0_2, att_1_2, norms
             (_erd_conv(128, 64, 1, True) + _erd_conv(64, 32, 1, True), 0),  # out_2_2, out_3_2
             dra(128, True)]  # skip_0_1_2 (simple=1 and large=1: the simple branch runs)
    for c, o in ((128, 64), (64, 32), (128, 64), (64, 32)):  # out_2_2_skip, out_3_2_skip, skip_2_1_2, skip_3_1_2
        total, dead = ire(c, 8, "ch")
        parts.append((total + _erd_conv(c, o, 1, True), dead))
    return sum(t for t, _ in parts), sum(d for _, d in parts)


def test_erdunet_count_equals_the_official_layout_less_its_dead_layers() -> None:
    """The official model counts 10,303,733; 222,964 of them (2.16%) can reach neither the output nor a gradient and
    are not built here. The rest must match exactly (the 388 frozen class projections included)."""
    total, dead = erdunet_official_count()
    assert (total, dead) == (10_303_733, 222_964)
    assert total == model_info("erdunet").extra["reference_params"]
    model = _meta("erdunet", 2, 3, 1)
    assert count_parameters(model) == total - dead == 10_080_769
    assert count_parameters(model) - count_parameters(model, trainable_only=True) == 2 * (128 + 1) + 2 * (64 + 1)
    assert model_info("erdunet").extra["paper_params"] is None


def test_erdunet_parameter_snapshot() -> None:
    """Snapshot (not a reference): 1 in / 2 classes, the catalogue's configuration."""
    total, dead = erdunet_official_count(cin=1, classes=2)
    assert count_parameters(_meta("erdunet", 2, 1, 2)) == total - dead == 10_073_464


def test_region_attention_simple_mode_by_hand() -> None:
    """Simple mode: ``x1`` doubles exactly where ``x1`` and ``x2`` fall on different sides of 0.5."""
    block = RegionDifferenceAttention(1, 1, "simple").eval()
    block.refine = nn.Identity()
    x1 = torch.tensor([0.2, 0.7, 0.9, 0.1]).view(1, 1, 2, 2)
    x2 = torch.tensor([0.6, 0.8, 0.1, 0.3]).view(1, 1, 2, 2)
    assert torch.allclose(block(x1, x2), torch.tensor([0.4, 0.7, 1.8, 0.1]).view(1, 1, 2, 2))


def test_learned_region_projections_are_frozen() -> None:
    """The class projections are only thresholded: no gradient reaches them, and a training step leaves them as
    they were (the official code's behaviour), while the rest of the block trains."""
    torch.manual_seed(0)
    block = RegionDifferenceAttention(4, 2, "learned")
    before = [p.detach().clone() for p in (*block.project_1.parameters(), *block.project_2.parameters())]
    opt = torch.optim.SGD([p for p in block.parameters() if p.requires_grad], lr=0.1)
    block(torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)).square().mean().backward()
    opt.step()
    assert all(not p.requires_grad for p in (*block.project_1.parameters(), *block.project_2.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before, (*block.project_1.parameters(), *block.project_2.parameters())))
    assert block.region[0].weight.grad is not None and block.refine[0].weight.grad is not None


def test_triple_attention_modes() -> None:
    x = torch.randn(2, 16, 6, 10)
    assert TripleAttention(16, 4, "spatial_map")(x).shape == (2, 1, 6, 10)
    assert TripleAttention(16, 8, "channel")(x).shape == x.shape
    assert TripleAttention(16, 4)(x).shape == x.shape
    assert not hasattr(TripleAttention(16, 8, "channel"), "pixel")  # branches a mode never runs are not built


@pytest.mark.parametrize("name", ["canet", "erdunet"])
@pytest.mark.parametrize("patch", [(40, 57), (33, 70)])
def test_odd_patches_are_padded_and_cropped(name: str, patch: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = create_model(name, 2, 1, 3, **model_info(name).tiny_kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, *patch)).shape == (1, 3, *patch)
