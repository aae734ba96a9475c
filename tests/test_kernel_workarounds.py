"""The oneDNN strided-1x1 defect (docs/known_issues.md) and how unetkit keeps away from it.

Native runs go through the isolated worker (tests/isolated.py): on an affected machine the
unprotected kernel kills its process, and that must fail one test, not the run.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import zoo_checks
from isolated import NativeCrash, run_isolated

from unetkit.models import create_model, list_models, model_info
from unetkit.models.blocks import memory_format_of
from unetkit.models.kernel_workarounds import (SubsampledPointwiseConv2d, SubsampledPointwiseConv3d,
                                               is_strided_pointwise, route_around_kernel_defects_)
from unetkit.models.umamba import MambaLayer


# ------------------------------------------------------------------ worker bodies (module level)
def _pointwise_gradients_channels_last(in_channels: int, out_channels: int, size: tuple[int, int],
                                       steps: int) -> float:
    """Weight gradient of a 1x1 stride-2 convolution on a channels-last input, through unetkit's
    replacement, against the same sum in float64 written out by hand (no convolution kernel):
    dL/dW[o, c] = sum over batch and kept pixels of x[b, c, 2i, 2j] * g[b, o, i, j]."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(in_channels, out_channels, 1, stride=2)
    route_around_kernel_defects_(conv)
    worst = 0.0
    for _ in range(steps):
        x = torch.randn(2, in_channels, *size)
        xl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        y = conv(xl)
        g = torch.randn_like(y)
        conv.weight.grad = None
        y.backward(g)
        expected = torch.einsum("bchw,bohw->oc", x[:, :, ::2, ::2].double(), g.double())
        worst = max(worst, (conv.weight.grad[:, :, 0, 0].double() - expected).abs().max().item())
    return worst


def _crash() -> None:
    import ctypes

    ctypes.string_at(0)  # read address 0: SIGSEGV, as a corrupting kernel would


# ------------------------------------------------------------------ the replacement is exact
@pytest.mark.parametrize("dims,size,stride,groups", [(2, (9, 14), (2, 2), 1), (2, (8, 7), (1, 2), 2),
                                                      (3, (5, 8, 9), (2, 2, 2), 1), (3, (6, 6, 7), (1, 2, 2), 1)])
def test_subsampled_pointwise_equals_strided_convolution(dims, size, stride, groups):
    """Forward and every gradient equal torch's own strided convolution, computed in float64 (a
    path that never enters oneDNN) -- odd sizes included, where the last kept voxel matters."""
    torch.manual_seed(0)
    conv_cls = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    ref = conv_cls(4, 6, 1, stride=stride, groups=groups).double()
    ours = conv_cls(4, 6, 1, stride=stride, groups=groups).double()
    ours.load_state_dict(ref.state_dict())
    assert route_around_kernel_defects_(ours) == 1
    assert isinstance(ours, (SubsampledPointwiseConv2d, SubsampledPointwiseConv3d))
    x = torch.randn(2, 4, *size, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref(xa), ours(xb)
    assert ya.shape == yb.shape
    torch.testing.assert_close(yb, ya)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xb.grad, xa.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad)


def test_only_strided_pointwise_convolutions_are_replaced():
    assert is_strided_pointwise(torch.nn.Conv2d(2, 3, 1, stride=2))
    assert not is_strided_pointwise(torch.nn.Conv2d(2, 3, 1))  # stride 1: the kernel is fine
    assert not is_strided_pointwise(torch.nn.Conv2d(2, 3, 3, stride=2))  # not a 1x1 kernel
    assert not is_strided_pointwise(torch.nn.Conv2d(2, 3, 1, stride=2, padding=1))  # padding changes the grid
    assert not is_strided_pointwise(torch.nn.ConvTranspose2d(2, 3, 1, stride=2))


@pytest.mark.parametrize("name", list_models())
def test_no_model_reaches_the_defective_kernel(name):
    """Every registered model, as create_model builds it, has no native strided 1x1 convolution
    left (8 families had one: U-Mamba, xLSTM-UNet, STU-Net, MedNeXt, ResUNet++, TransUNet)."""
    info = model_info(name)
    for dims in info.spatial_dims:
        with torch.device("meta"):
            model = create_model(name, dims, 2, 3, **info.tiny_kwargs)
        left = [n for n, m in model.named_modules() if is_strided_pointwise(m)]
        assert not left, f"{name} {dims}D: {left}"


# ------------------------------------------------------------------ native runs, isolated
def test_replacement_survives_the_shapes_that_crash_onednn():
    """(2, 2, 64, 64) channels-last through a 1x1 stride-2 convolution: oneDNN 3.12's kernel
    segfaulted 5 of 5 runs on this shape (AMD EPYC, AVX-512); unetkit's path is exact."""
    for cin, cout, size in [(2, 8, (64, 64)), (2, 3, (64, 64)), (4, 8, (40, 56)), (16, 32, (10, 14))]:
        worst = run_isolated(_pointwise_gradients_channels_last, cin, cout, size, 10, timeout=120)
        assert worst < 1e-3, (cin, cout, size, worst)


@pytest.mark.parametrize("name", ["umamba_enc", "umamba_bot", "xlstm_unet_bot", "stunet_s", "mednext_s",
                                  "resunetpp", "transunet"])
def test_models_with_strided_pointwise_train_in_channels_last(name):
    """``--channels-last`` training of the affected families in 2D, where the defective kernel
    is (3D channels-last strided 1x1 gradients were correct in every shape tried): forward,
    backward, finite gradients."""
    run_isolated(zoo_checks.forward_backward_shapes, name, 2, True, timeout=300)


def test_mamba_layer_keeps_the_input_layout():
    """U-Mamba's layer flattens voxels to tokens and reshapes a transposed result back; its output
    must be laid out as its input (a channels-first network stays channels-first)."""
    layer = MambaLayer(4)
    x = torch.randn(2, 4, 6, 10)
    assert memory_format_of(layer(x)) == torch.contiguous_format and layer(x).is_contiguous()
    xl = x.contiguous(memory_format=torch.channels_last)
    assert memory_format_of(layer(xl)) == torch.channels_last
    torch.testing.assert_close(layer(xl), layer(x))


# ------------------------------------------------------------------ the isolation itself
def test_a_native_crash_fails_one_test_and_the_next_call_works():
    with pytest.raises(NativeCrash, match="SIGSEGV"):
        run_isolated(_crash, timeout=60)
    assert run_isolated(F.relu, torch.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]


def _fails(kind: str) -> None:
    if kind == "assert":
        assert 1 + 1 == 3, "hand-made failure"
    raise KeyError("hand-made error")


def test_worker_exceptions_come_back_with_their_traceback():
    with pytest.raises(AssertionError, match="(?s)hand-made failure.*in the isolated worker.*_fails"):
        run_isolated(_fails, "assert")
    with pytest.raises(RuntimeError, match="KeyError: 'hand-made error'"):
        run_isolated(_fails, "error")
