"""Tests of MedT and MT-UNet (issue 17): parameter counts against the official code's layout counted by
hand (neither paper's printed figure could be read through our tools; said so in each entry), the
metadata contract, and what the generic tests over ``list_models()`` cannot see: padded and oversized
inputs, the gated axial attention against a direct per-position computation, the Gaussian-weighted
axial attention against the reference's loop, and the reference's window padding.

PARAMETER_SNAPSHOTS are our own exact counts: they flag a changed layout, nothing more.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from paper_counts import assert_matches_paper

from unetkit.models import count_parameters, create_model, model_info

MODELS = ("medt", "mtunet")
TAGS = {"cnn", "transformer", "hybrid", "mamba", "rwkv", "mlp", "kan", "xlstm", "attention", "residual", "dense",
        "multiscale", "nested", "recurrent", "lightweight", "pretrainable-encoder"}


def _meta(name: str, cin: int, ncls: int, **kwargs: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, 2, cin, ncls, deep_supervision=False, **kwargs)


# ----------------------------------------------------------------------- the official layouts, by hand
def _medt_official(cin: int = 3, ncls: int = 2, img: int = 128) -> int:
    """jeya-maria-jose/Medical-Transformer lib/models/axialnet.py ``MedT`` (s=0.125, groups 8), layer by layer."""
    def attention(c: int, span: int, positional: bool) -> int:
        qkv = 2 * c * c + 4 * c  # bias-free 1x1 projection + BN
        if positional:  # BN of 3 logit terms, BN of 2 output terms, relative table, 4 gates
            return qkv + 6 * 8 + 4 * c + 2 * (c // 8) * (2 * span - 1) + 4
        return qkv + 2 * 8 + 2 * c

    def block(cin_: int, p: int, span_in: int, span_out: int, positional: bool, shortcut: bool) -> int:
        n = cin_ * p + 2 * p + attention(p, span_in, positional) + attention(p, span_out, positional) + 2 * p * p + 4 * p
        n += (cin_ * 2 * p + 4 * p) if shortcut else 0
        return n + (0 if positional else p * p + p)  # AxialBlock_wopos.conv1: built, never called

    stem = cin * 8 * 49 + 16 + 8 * 128 * 9 + 256 + 128 * 8 * 9 + 16
    half, quarter = img // 2, img // 4
    glob = (block(8, 16, half, half, True, True) + block(32, 32, half, half, True, True)
            + block(64, 32, quarter, quarter, True, False) + 64 * 32 * 9 + 32 + 32 * 16 * 9 + 16)
    loc = (block(8, 16, 0, 0, False, True) + block(32, 32, 0, 0, False, True) + block(64, 32, 0, 0, False, False)
           + block(64, 64, 0, 0, False, True) + 3 * block(128, 64, 0, 0, False, False) + block(128, 128, 0, 0, False, True))
    loc += sum(a * b * 9 + b for a, b in ((256, 256), (256, 128), (128, 64), (64, 32), (32, 16)))
    return 2 * stem + glob + loc + 16 * 16 * 9 + 16 + 16 * ncls + ncls


def _medt_unused(model: torch.nn.Module) -> int:
    """The 1x1 convs (with bias) that the official blocks without positional terms build and never call."""
    from unetkit.models.axial_mixed_transformers import AxialBlock
    widths = [b.height.qkv.in_channels for b in model.modules() if isinstance(b, AxialBlock) and not b.height.positional]
    return sum(p * p + p for p in widths)


def _mtunet_official(cin: int = 3, ncls: int = 9) -> int:
    """Dootmaan/MT-UNet MTUNet.py ``MTUNet`` (configs: win 4, head 8, encoder 256, 512, bottleneck 1024), by hand."""
    def cbr(a: int, b: int, k: int) -> int:
        return a * b * k * k + 2 * b

    def double(a: int, b: int) -> int:  # DoubleConv: two conv-BN, then 1x1 conv (bias) + BN
        return cbr(a, b, 3) + cbr(b, b, 3) + b * b + b + 2 * b

    def mtm(d: int) -> int:
        attention = 4 * (d * d + d)  # q, k, v, out linears (the axial one never calls its out)
        lgg = 2 * attention + d * 16 + 16 + 2 + 2 * d * d + d  # + window pooling, Gaussian shift/bias, 1x1 fuse
        head = d * 4 // 32
        ea = 4 * d * d + 4 * d + head * 64 + 64 + 64 * head + head + 4 * d * d + d
        return 4 * d + lgg + ea

    def convt(a: int, b: int) -> int:
        return a * b * 4 + b

    n = double(cin, 64) + double(64, 128) + double(128, 256) + cbr(256, 256, 1) + 784 * 256
    n += 2 * mtm(256) + cbr(256, 512, 2) + 2 * mtm(512) + cbr(512, 1024, 2) + 2 * mtm(1024)
    n += convt(1024, 512) + 1024 * 512 + 512 + 2 * mtm(512) + convt(512, 256) + 2 * mtm(512)
    n += convt(512, 256) + double(512, 256) + convt(256, 128) + double(256, 128) + convt(128, 64) + double(128, 64)
    return n + 64 * ncls + ncls


def _mtunet_unused(model: torch.nn.Module) -> int:
    """Per LGG-SA the axial attention's output linear (never called) and the Gaussian offset (cancels in softmax)."""
    from unetkit.models.axial_mixed_transformers import LocalGlobalGaussianAttention
    dims = [m.fuse.out_channels for m in model.modules() if isinstance(m, LocalGlobalGaussianAttention)]
    return sum(d * d + d + 1 for d in dims)


def test_hand_counts_are_the_official_totals() -> None:
    """The hand counts above, for the record (official code, paper configurations)."""
    assert _medt_official() == 1_419_938
    assert _mtunet_official() == 79_075_389


# (name, in, classes, kwargs, count, figure, tolerance, source)
PAPER_COUNTS: list[tuple[str, int, int, dict[str, Any], Any, str, float, str]] = [
    ("medt", 3, 2, {}, lambda m: count_parameters(m) + _medt_unused(m), "1,419,938", 0.0,
     ("no figure read from Valanarasu 2021; official code (axialnet.py MedT), 3 in, 2 classes, 128x128, "
     "whose blocks without positional terms also hold a 1x1 conv they never call (ours leaves it out)")),
    ("mtunet", 3, 9, {}, lambda m: count_parameters(m) + _mtunet_unused(m), "79,075,389", 0.0,
     ("no figure read from Wang 2022; official code (MTUNet.py), 3 in, 9 classes (Synapse), 224x224, with the "
     "axial attention's unused output projections and the Gaussian offsets (ours leaves them out)")),
]


@pytest.mark.parametrize("case", PAPER_COUNTS, ids=[c[0] for c in PAPER_COUNTS])
def test_parameter_count_matches_official_code(case: tuple) -> None:
    name, cin, ncls, kwargs, count, printed, tolerance, source = case
    assert_matches_paper(count(_meta(name, cin, ncls, **kwargs)), printed, tolerance, f"{name} ({source})")


PARAMETER_SNAPSHOTS: list[tuple[str, int, int, int]] = [
    ("medt", 3, 2, 1_384_402),
    ("mtunet", 3, 9, 75_268_659),
]


@pytest.mark.parametrize("name,cin,ncls,snapshot", PARAMETER_SNAPSHOTS)
def test_parameter_count_snapshot(name: str, cin: int, ncls: int, snapshot: int) -> None:
    assert count_parameters(_meta(name, cin, ncls)) == snapshot


def test_medt_position_tables_follow_img_size() -> None:
    """The relative tables span the attended axis: 2 x 64 - 1 entries at 128 (global branch, 1/2)."""
    small, large = _meta("medt", 3, 2, img_size=[128, 128]), _meta("medt", 3, 2, img_size=[256, 192])
    table = small.global_stages[0][0].height.relative
    assert table.shape == (4, 127)
    assert large.global_stages[0][0].height.relative.shape == (4, 255)
    assert large.global_stages[0][0].width.relative.shape == (4, 191)


@pytest.mark.parametrize("name", MODELS)
def test_metadata_contract(name: str) -> None:
    extra = model_info(name).extra
    assert extra["tags"] and set(extra["tags"]) <= TAGS
    assert extra["paper_params"] is None and "official code" in extra["paper_setup"]
    assert extra["patch_kwarg"] == "img_size" and extra["pads_input"]
    tiny = _meta(name, 1, 2, **model_info(name).tiny_kwargs)
    assert count_parameters(tiny) <= 2_000_000


@pytest.mark.parametrize("name", MODELS)
def test_smaller_input_is_padded_larger_refused(name: str) -> None:
    info = model_info(name)
    side = info.extra["divisible_by"]
    torch.manual_seed(0)
    model = create_model(name, 2, 1, 2, img_size=[side, side], **info.tiny_kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, side - 5, side - 13)).shape == (1, 2, side - 5, side - 13)
        with pytest.raises(ValueError, match="img_size"):
            model(torch.randn(1, 1, side + 1, side))
    with pytest.raises(ValueError, match="multiples"):
        create_model(name, 2, 1, 2, img_size=[side + 8, side])


def test_gated_axial_attention_matches_a_per_position_computation() -> None:
    """Height attention of one group, written out per query i and key j (Eq. 3, gates included)."""
    from unetkit.models.axial_mixed_transformers import GatedAxialAttention
    torch.manual_seed(0)
    att = GatedAxialAttention(4, 1, axis=2, span=5).eval()
    with torch.no_grad():
        att.gates.copy_(torch.tensor([0.3, 0.7, 0.2, 0.9]))
        x = torch.randn(1, 4, 5, 1)
        out = att(x)[0, :, :, 0]  # (C, H)
        qkv = att.qkv_norm(att.qkv(x[..., 0]))[0]  # (8, H): q 0-1, k 2-3, v 4-7
        q, k, v = qkv[:2], qkv[2:4], qkv[4:]
        rel = att.relative  # (8, 9); entry for (query i, key j) is column i - j + 4 (keys: j - i + 4)
        ln, on = att.logit_norm, att.out_norm

        def bn(norm: torch.nn.Module, ch: int, value: torch.Tensor) -> torch.Tensor:
            return (value - norm.running_mean[ch]) / torch.sqrt(norm.running_var[ch] + norm.eps) * norm.weight[ch] + norm.bias[ch]

        expected = torch.zeros(4, 5)
        for i in range(5):
            logits = torch.stack([bn(ln, 0, q[:, i] @ k[:, j]) + bn(ln, 1, 0.3 * (q[:, i] @ rel[:2, i - j + 4]))
                                  + bn(ln, 2, 0.7 * (k[:, j] @ rel[2:4, j - i + 4])) for j in range(5)])
            w = logits.softmax(0)
            for c in range(4):
                content = sum(w[j] * v[c, j] for j in range(5))
                positional = sum(w[j] * rel[4 + c, i - j + 4] for j in range(5))
                expected[c, i] = bn(on, 2 * c, 0.9 * content) + bn(on, 2 * c + 1, 0.2 * positional)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_gaussian_axial_attention_matches_the_reference_loop() -> None:
    """Row + column attention with logits minus shift x squared distance, as the reference's double loop."""
    from unetkit.models.axial_mixed_transformers import LocalGlobalGaussianAttention
    torch.manual_seed(0)
    lgg = LocalGlobalGaussianAttention(8, 2)
    x = torch.randn(2, 3, 4, 8)
    with torch.no_grad():
        out = lgg._gaussian_axial(x)
        q, k, v = (proj(x) for proj in lgg.global_qkv)
        expected = torch.zeros_like(out)
        for r in range(3):
            for c in range(4):
                row = torch.einsum("bc,bjc->bj", q[:, r, c], k[:, r])
                col = torch.einsum("bc,bjc->bj", q[:, r, c], k[:, :, c])
                row = (row - lgg.shift * (torch.arange(4) - c) ** 2).softmax(-1)
                col = (col - lgg.shift * (torch.arange(3) - r) ** 2).softmax(-1)
                expected[:, r, c] = torch.einsum("bj,bjc->bc", row, v[:, r]) + torch.einsum("bj,bjc->bc", col, v[:, :, c])
    torch.testing.assert_close(out, expected)


def test_window_padding_repeats_the_corner_like_the_reference() -> None:
    from unetkit.models.axial_mixed_transformers import _pad_grid_like_reference
    x = torch.arange(1.0, 50.0).view(1, 7, 7, 1)
    padded = _pad_grid_like_reference(x, 4)[0, :, :, 0]
    assert padded.shape == (8, 8)
    assert torch.equal(padded[:7, :7], x[0, :, :, 0])
    assert padded[7, 7] == x[0, 6, 6, 0] and padded[7, 0] == 0 and padded[0, 7] == 0

