"""Transformer, hybrid and sequence models of the zoo: parameter counts against the papers,
the plain-PyTorch selective scan against its recurrence, run-time padding / positional-embedding
interpolation, and the plan keywords the trainer passes with ``--arch``.

The generic tests in tests/test_models.py cover forward / backward / deep supervision /
state-dict round trips of every registered name with its tiny configuration.
"""

from __future__ import annotations

import pytest
import torch

from paper_counts import assert_matches_paper
from unetkit.models import count_parameters, create_model, model_info

# (name, dims, in_channels, num_classes, figure as printed, relative tolerance (0: the printed
#  precision), where it is printed and, for a tolerance, why)
PAPER_COUNTS = [
    ("transunet", 2, 3, 9, "105.28M", 0.0,
     "Chen et al. 2021 R50-ViT-B/16 at 224x224, 3 in, 9 classes, as tabulated by UCTransNet (AAAI 2022, Tab. 1)"),
    ("swin_unet", 2, 3, 9, "27.17M", 0.0, "Cao et al. 2021, Swin-T lite at 224x224, 3 in, 9 classes"),
    ("unetr", 3, 1, 14, "92.58M", 0.0025,
     "Hatamizadeh et al. WACV 2022 Table 5, 96^3, 1 in, 14 classes (BTCV), feature size 16; +0.22%: our "
     "layout is MONAI's UNETR with the paper's keywords, the variant the paper counted is not established"),
    ("swin_unetr", 3, 1, 14, "62.19M", 0.0, "Tang et al. CVPR 2022 Table 5 / MONAI SwinUNETR, feature size 48"),
]


def _meta(name: str, dims: int, cin: int, ncls: int, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):  # sizes only: no memory, no init, no forward
        return create_model(name, dims, cin, ncls, **kwargs)


@pytest.mark.parametrize("name,dims,cin,ncls,printed,tolerance,source", PAPER_COUNTS, ids=[c[0] for c in PAPER_COUNTS])
def test_default_parameter_count_matches_paper(name: str, dims: int, cin: int, ncls: int, printed: str,
                                               tolerance: float, source: str) -> None:
    n = count_parameters(_meta(name, dims, cin, ncls, deep_supervision=False))
    assert_matches_paper(n, printed, tolerance, f"{name} ({source})")


def test_parameter_count_snapshots() -> None:
    """Snapshots of our own exact counts (docs/models.md): they flag any change of a network's
    layout and are no evidence that it is right. Focal-UNet, U-Mamba and xLSTM-UNet papers print
    no parameter count, so for them a snapshot is all there is."""
    topo = dict(n_stages=4, features_per_stage=[32, 64, 128, 256], strides=[1, 2, 2, 2])
    assert count_parameters(_meta("transunet", 2, 3, 9, deep_supervision=False)) == 105_277_081
    assert count_parameters(_meta("swin_unet", 2, 3, 9, deep_supervision=False)) == 27_168_900
    assert count_parameters(_meta("unetr", 3, 1, 14, deep_supervision=False)) == 92_784_046
    assert count_parameters(_meta("swin_unetr", 3, 1, 14, deep_supervision=False)) == 62_187_296
    assert count_parameters(_meta("focal_unet", 2, 3, 9, deep_supervision=False)) == 32_396_700
    assert count_parameters(_meta("umamba_bot", 3, 1, 3, **topo)) == 7_323_305
    assert count_parameters(_meta("umamba_enc", 3, 1, 3, **topo)) == 7_482_793
    assert count_parameters(_meta("xlstm_unet_bot", 3, 1, 3, **topo)) == 7_300_529
    for name in ("focal_unet", "umamba_bot", "xlstm_unet_bot"):
        assert model_info(name).extra["paper_params"] is None


def test_selective_scan_equals_recurrence() -> None:
    from unetkit.models.umamba import selective_scan

    torch.manual_seed(0)
    b, length, d, n = 2, 37, 5, 4
    u, delta = torch.randn(b, length, d), torch.rand(b, length, d)
    A, Bm, Cm = -3 * torch.rand(d, n), torch.randn(b, length, n), torch.randn(b, length, n)
    h, ref = torch.zeros(b, d, n), []
    for t in range(length):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[..., None] * Bm[:, t, None, :]
        ref.append((h * Cm[:, t, None, :]).sum(-1))
    ref = torch.stack(ref, 1)
    for budget in (10 ** 9, 2000, 1):  # one chunk, chunks of a few steps, fully sequential
        torch.testing.assert_close(selective_scan(u, delta, A, Bm, Cm, max_elements=budget), ref,
                                   rtol=1e-5, atol=1e-5)


def test_mamba_parameter_names_match_mamba_ssm() -> None:
    from unetkit.models.umamba import Mamba

    m = Mamba(32)
    assert {k for k, _ in m.named_parameters()} == {
        "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
        "A_log", "D", "out_proj.weight"}
    assert m.A_log.shape == (64, 16) and m.dt_rank == 2


def test_mlstm_parallel_equals_recurrent_form() -> None:
    """Stabilized parallel mLSTM (as used) against the recurrence of Beck et al. 2024, Eq. 19-27."""
    import math

    from unetkit.models.xlstm_unet import mlstm_parallel

    torch.manual_seed(0)
    b, h, length, dh = 1, 2, 9, 3
    q, k, v = torch.randn(b, h, length, dh), torch.randn(b, h, length, dh), torch.randn(b, h, length, dh)
    ig, fg = torch.randn(b, h, length, 1), torch.randn(b, h, length, 1) + 2
    out = mlstm_parallel(q, k, v, ig, fg)
    c = torch.zeros(b, h, dh, dh)
    nvec = torch.zeros(b, h, dh)
    m = torch.full((b, h), -float("inf"))
    for t in range(length):
        logf = torch.nn.functional.logsigmoid(fg[:, :, t, 0])
        m_new = torch.maximum(logf + m, ig[:, :, t, 0])
        fi, ii = torch.exp(logf + m - m_new), torch.exp(ig[:, :, t, 0] - m_new)
        kt = k[:, :, t] / math.sqrt(dh)
        c = fi[..., None, None] * c + ii[..., None, None] * v[:, :, t, :, None] * kt[:, :, None, :]
        nvec = fi[..., None] * nvec + ii[..., None] * kt
        num = (c @ q[:, :, t, :, None])[..., 0]
        den = torch.maximum((nvec * q[:, :, t]).sum(-1).abs(), torch.exp(-m_new))[..., None]
        torch.testing.assert_close(out[:, :, t], num / (den + 1e-6), rtol=1e-4, atol=1e-5)
        m = m_new


@pytest.mark.parametrize("name,dims,patch", [("unetr", 3, (20, 24, 36)), ("swin_unetr", 2, (40, 72)),
                                             ("transunet", 2, (36, 52)), ("swin_unet", 2, (50, 40)),
                                             ("focal_unet", 2, (30, 44))])
def test_any_patch_is_padded_and_cropped(name: str, dims: int, patch: tuple) -> None:
    torch.manual_seed(0)
    model = create_model(name, dims, 1, 2, **{**model_info(name).tiny_kwargs, "deep_supervision": False}).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, *patch)).shape == (1, 2, *patch)
    assert model_info(name).extra["divisible_by"] in (16, 32)


def test_positional_embedding_is_interpolated_to_the_token_grid() -> None:
    from unetkit.models.attention_blocks import resize_pos_embed

    pos = torch.arange(6.0).view(1, 6, 1)  # 2x3 grid
    assert torch.equal(resize_pos_embed(pos, (2, 3), (2, 3)), pos)
    assert resize_pos_embed(pos, (2, 3), (4, 6)).shape == (1, 24, 1)
    model = create_model("unetr", 3, 1, 2, deep_supervision=False, img_size=[32, 32, 32], feature_size=4,
                         hidden_size=32, mlp_dim=64, num_layers=4, num_heads=2)
    assert model.pos_embed.shape == (1, 8, 32)
    assert model(torch.randn(1, 1, 48, 32, 16)).shape == (1, 2, 48, 32, 16)


def test_shifted_window_mask_separates_regions() -> None:
    from unetkit.models.attention_blocks import _shift_mask

    mask = _shift_mask((8, 8), (4, 4), (2, 2), torch.device("cpu"))
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()  # the top-left window holds one region
    assert (mask[-1] == -100).any() and (torch.diagonal(mask[-1]) == 0).all()


@pytest.mark.parametrize("name", ["transunet", "swin_unet", "unetr", "swin_unetr", "focal_unet"])
def test_fixed_architectures_accept_plan_topology_keywords(name: str) -> None:
    """The trainer retries ``--arch`` with the plan's topology keywords; fixed designs ignore them."""
    dims = model_info(name).spatial_dims[0]
    with torch.device("meta"):
        a = create_model(name, dims, 1, 2, deep_supervision=False)
        b = create_model(name, dims, 1, 2, deep_supervision=False, n_stages=4, features_per_stage=[8, 16, 32, 64],
                         kernel_sizes=3, strides=[1, 2, 2, 2])
    assert count_parameters(a) == count_parameters(b)


def test_sequence_models_follow_the_plan_and_umamba_rules() -> None:
    info = model_info("umamba_bot")
    kw = info.default_kwargs(3)
    assert kw["n_conv_per_stage"] == [2, 2, 2, 1, 1]  # deeper half: one block (U-Mamba's rule)
    assert kw["n_conv_per_stage_decoder"] == [2, 2, 2, 1]  # reference: indices >= ceil((n-1)/2 + 0.5)
    model = create_model("umamba_enc", 3, 1, 2, n_stages=3, features_per_stage=[4, 8, 16], strides=[1, 2, 2],
                         patch_size=[8, 8, 8])
    layers = model.seq_layers
    assert [layer.channel_token for layer in layers] == [False, False, True]  # 2x2x2 = 8 voxels <= 16 channels
    outs = model(torch.randn(1, 1, 8, 8, 8))
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 8, 8), (4, 4, 4)]
    with pytest.raises(ValueError, match="built for 8 voxels"):
        model(torch.randn(1, 1, 16, 8, 8))
