"""The Mamba / RWKV U-Nets of the zoo (vmamba.py, rwkv_unet.py) and the shared scans (ssm_blocks.py):
parameter counts against the papers' figures, snapshots of our own counts, the plain-PyTorch scans
against their recurrences (values and gradients), SS2D's four directions, odd patch sizes.

The generic tests in tests/test_models.py cover forward / backward / deep supervision / overfitting
/ state-dict round trips of every registered name with its tiny configuration.
"""

from __future__ import annotations

import math

import pytest
import torch

from paper_counts import assert_matches_paper
from unetkit.models import count_parameters, create_model, model_info

MAMBA_ZOO = ("vmunet", "mamba_unet", "swin_umamba", "vmunet_v2", "ultralight_vmunet", "h_vmunet", "rwkv_unet")


def _meta(name: str, cin: int, ncls: int, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):  # sizes only: no memory, no init, no forward
        return create_model(name, 2, cin, ncls, deep_supervision=False, **kwargs)


# (name, in_channels, classes, figure as printed, relative tolerance (0: the printed precision), source)
PAPER_COUNTS = [
    ("vmunet", 3, 1, "27.43M", 0.0, "Ruan & Xiang 2024, 3 in, 1 class (ISIC), C 96, depths 2,2,2,2 / 2,2,2,1"),
    ("swin_umamba", 1, 14, "59.89M", 0.0, "Liu et al. 2024 Table 1, AbdomenMRI (1 in, 14 classes)"),
    ("ultralight_vmunet", 3, 1, "0.049M", 0.0, "Wu et al. 2024 abstract / Table 1, 3 in, 1 class"),
]


@pytest.mark.parametrize("name,cin,ncls,printed,tolerance,source", PAPER_COUNTS, ids=[c[0] for c in PAPER_COUNTS])
def test_default_parameter_count_matches_paper(name: str, cin: int, ncls: int, printed: str, tolerance: float,
                                               source: str) -> None:
    assert_matches_paper(count_parameters(_meta(name, cin, ncls)), printed, tolerance, f"{name} ({source})")
    assert model_info(name).extra["paper_params"] is not None


def _unused_global_filter_params(c_list=(8, 16, 32, 64, 128, 256)) -> int:
    """Parameters of the reference H-vmunet's ``Local_SS2D.complex_weight``, a global-filter weight
    its forward never uses (not built here): ``width / 2 x h x w x 2`` per Local-SS2D, with the
    reference's (h, w) per order (14x8 for orders 2-3, 24x13 for 4, 12x7 for 5) and width the sum
    of the order's gate widths; 2 blocks per level, encoder levels 2-5 and decoder levels 5-2."""
    grid = {2: (14, 8), 3: (14, 8), 4: (24, 13), 5: (12, 7)}
    total = 0
    for order, enc_dim, dec_dim in ((2, c_list[1], c_list[2]), (3, c_list[2], c_list[3]), (4, c_list[3], c_list[4]),
                                    (5, c_list[4], c_list[5])):
        for dim in (enc_dim, dec_dim):
            width = sum(dim // 2 ** i for i in range(order))
            total += 2 * (width // 2) * grid[order][0] * grid[order][1] * 2
    return total


def test_h_vmunet_has_67_28_percent_fewer_parameters_than_vm_unet() -> None:
    """H-vmunet's abstract: 67.28 % fewer parameters than VM-UNet (both 3 in, 1 class). The
    reference counts its unused global-filter weights too, so they are added to ours."""
    h = count_parameters(_meta("h_vmunet", 3, 1)) + _unused_global_filter_params()
    vm = count_parameters(_meta("vmunet", 3, 1))
    assert abs((1 - h / vm) - 0.6728) < 0.0002, (h, vm, 1 - h / vm)
    assert model_info("h_vmunet").extra["paper_params"] is None


def test_parameter_count_snapshots() -> None:
    """Snapshots of our own exact counts (docs/models.md): they flag any change of a network's
    layout and are no evidence that it is right. Mamba-UNet, VM-UNet-V2 and RWKV-UNet print no
    count we could read, so for them a snapshot at the official code's configuration is all there is."""
    assert count_parameters(_meta("vmunet", 3, 1)) == 27_427_561
    assert count_parameters(_meta("mamba_unet", 3, 4)) == 19_121_664
    assert count_parameters(_meta("swin_umamba", 1, 14)) == 59_889_368
    assert count_parameters(_meta("vmunet_v2", 3, 1)) == 13_822_188  # + the reference's unused 4th stage: 22,734,060
    assert count_parameters(_meta("ultralight_vmunet", 3, 1)) == 49_457
    assert count_parameters(_meta("h_vmunet", 3, 1)) == 8_569_231
    assert count_parameters(_meta("rwkv_unet", 1, 9)) == 17_125_579
    assert count_parameters(_meta("rwkv_unet", 1, 9, variant="t")) == 3_145_827
    for name in ("mamba_unet", "vmunet_v2", "rwkv_unet"):
        assert model_info(name).extra["paper_params"] is None


def test_vmunet_v2_leaves_out_the_unused_fourth_stage() -> None:
    from unetkit.models.ssm_blocks import VSSStage

    with torch.device("meta"):
        unused = count_parameters(VSSStage(768, 2))
    assert count_parameters(_meta("vmunet_v2", 3, 1)) + unused == 22_734_060


def test_metadata_has_the_zoo_keys() -> None:
    for name in MAMBA_ZOO:
        extra = model_info(name).extra
        assert extra["tags"] and {"mamba", "rwkv"} & set(extra["tags"])
        assert "paper_params" in extra and extra["paper_setup"] and extra["divisible_by"] in (16, 32)
        assert model_info(name).spatial_dims == (2,)


# -------------------------------------------------------------------------------------- the scans
def _recurrence(u, delta, A, Bm, Cm):
    h, out = torch.zeros(u.shape[0], u.shape[2], A.shape[1], dtype=u.dtype), []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[..., None] * Bm[:, t, None, :]
        out.append((h * Cm[:, t, None, :]).sum(-1))
    return torch.stack(out, 1)


def test_selective_scan_gradients_equal_autograd_through_the_recurrence() -> None:
    """The written-out backward pass against autograd through the step-by-step recurrence."""
    from unetkit.models.ssm_blocks import selective_scan

    torch.manual_seed(0)
    b, length, d, n = 2, 23, 4, 3
    inputs = [torch.randn(b, length, d), torch.rand(b, length, d), -2 * torch.rand(d, n), torch.randn(b, length, n),
              torch.randn(b, length, n)]
    grads = []
    for fn in (selective_scan, _recurrence):
        leaves = [t.double().requires_grad_() for t in inputs]
        (fn(*leaves) * torch.linspace(-1, 1, d, dtype=torch.double)).sum().backward()
        grads.append([leaf.grad for leaf in leaves])
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-10)


def test_grouped_selective_scan_is_one_scan_per_group() -> None:
    from unetkit.models.ssm_blocks import selective_scan

    torch.manual_seed(0)
    b, length, groups, per, n = 1, 19, 2, 3, 4
    u, delta = torch.randn(b, length, groups * per), torch.rand(b, length, groups * per)
    A, Bm, Cm = -torch.rand(groups * per, n), torch.randn(b, length, groups, n), torch.randn(b, length, groups, n)
    y = selective_scan(u, delta, A, Bm, Cm)
    for g in range(groups):
        sl = slice(g * per, (g + 1) * per)
        torch.testing.assert_close(y[..., sl], _recurrence(u[..., sl], delta[..., sl], A[sl], Bm[:, :, g], Cm[:, :, g]),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 4, 7, 50])
def test_linear_scan_equals_recurrence_both_ways(chunk: int) -> None:
    from unetkit.models.ssm_blocks import linear_scan

    torch.manual_seed(0)
    a, x = torch.rand(2, 37, 3, dtype=torch.double), torch.randn(2, 37, 3, dtype=torch.double)
    for reverse in (False, True):
        order = range(36, -1, -1) if reverse else range(37)
        h, ref = torch.zeros(2, 3, dtype=torch.double), {}
        for t in order:
            h = a[:, t] * h + x[:, t]
            ref[t] = h
        torch.testing.assert_close(linear_scan(a, x, chunk, reverse), torch.stack([ref[t] for t in range(37)], 1))


def test_cross_scan_directions_and_merge() -> None:
    """SS2D's scan orders: rows, columns, rows reversed, columns reversed; merging undoes each."""
    from unetkit.models.ssm_blocks import cross_merge, cross_scan

    x = torch.arange(6.0).view(1, 1, 2, 3)
    xs = cross_scan(x)
    assert xs[0, :, 0].tolist() == [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5], [5, 4, 3, 2, 1, 0], [5, 2, 4, 1, 3, 0]]
    assert torch.equal(cross_merge(xs, 2, 3), 4 * x.flatten(2))


def test_bi_wkv_equals_its_definition() -> None:
    """Vision-RWKV's bidirectional WKV against the O(T^2) sum it defines (Duan et al. 2024, Eq. 5)."""
    from unetkit.models.rwkv_unet import bi_wkv

    torch.manual_seed(0)
    b, t, c = 2, 11, 3
    w, u = torch.tensor([0.3, -0.2, 1.5]), torch.randn(c)
    k, v = 3 * torch.randn(b, t, c), torch.randn(b, t, c)
    dist = (torch.arange(t)[:, None] - torch.arange(t)[None, :]).abs()
    expo = -(dist[None, :, :, None] - 1) * w + k[:, None]  # (B, T_out, T_in, C)
    eye = torch.eye(t, dtype=torch.bool)[None, :, :, None]
    expo = torch.where(eye, (u + k)[:, :, None], expo)
    weights = torch.softmax(expo, dim=2)
    torch.testing.assert_close(bi_wkv(w, u, k, v), (weights * v[:, None]).sum(2), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ the networks
@pytest.mark.parametrize("name", MAMBA_ZOO)
def test_any_patch_is_padded_and_cropped(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 2, 1, 2, **{**model_info(name).tiny_kwargs, "deep_supervision": False}).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 30, 44)).shape == (1, 2, 30, 44)


@pytest.mark.parametrize("name", ["swin_umamba", "vmunet_v2"])
def test_deep_supervision_levels_are_cropped_with_the_input(name: str) -> None:
    model = create_model(name, 2, 1, 2, **model_info(name).tiny_kwargs)
    with torch.no_grad():
        outs = model(torch.randn(1, 1, 40, 56))
    assert [tuple(o.shape[2:]) for o in outs] == [(math.ceil(40 / 2 ** k), math.ceil(56 / 2 ** k))
                                                  for k in range(len(outs))]


@pytest.mark.parametrize("name", MAMBA_ZOO)
def test_fixed_designs_accept_plan_topology_keywords(name: str) -> None:
    a = _meta(name, 1, 2)
    b = _meta(name, 1, 2, n_stages=4, features_per_stage=[8, 16, 32, 64], kernel_sizes=3, strides=[1, 2, 2, 2])
    assert count_parameters(a) == count_parameters(b)


def test_ss2d_parameter_names_match_the_reference() -> None:
    from unetkit.models.ssm_blocks import SS2D

    m = SS2D(32)
    assert {k: tuple(v.shape) for k, v in m.named_parameters()} == {
        "in_proj.weight": (128, 32), "conv2d.weight": (64, 1, 3, 3), "conv2d.bias": (64,),
        "x_proj_weight": (4, 34, 64), "dt_projs_weight": (4, 64, 2), "dt_projs_bias": (4, 64),
        "A_logs": (256, 16), "Ds": (256,), "out_norm.weight": (64,), "out_norm.bias": (64,),
        "out_proj.weight": (32, 64)}


def test_umamba_names_still_import() -> None:
    """The scan and the Mamba block moved to ssm_blocks.py; umamba.py re-exports them."""
    from unetkit.models import ssm_blocks, umamba

    for name in ("selective_scan", "Mamba", "no_autocast", "_mamba_ssm_scan", "SCAN_MAX_ELEMENTS", "SCAN_CHUNK"):
        assert getattr(umamba, name) is getattr(ssm_blocks, name)
