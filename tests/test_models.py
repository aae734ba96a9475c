"""Tests of unetkit.models: the registry, every registered model, and the nnU-Net U-Nets.

The generic tests run over ``list_models()``, so a model is covered the moment it is registered
(each registration provides ``tiny_kwargs`` for a small instance on the patches below).
"""

from __future__ import annotations

import re
import time

import pytest
from references import require_module
import torch
import zoo_checks
from isolated import run_isolated
from zoo_checks import PATCHES

from unetkit.models import (UnknownModelError, conv_feature_map_size, count_parameters, create_model,
                            list_families, list_models, model_info, register_model)

# --------------------------------------------------------------------------------------------
# Reference numbers from dynamic-network-architectures 0.4.4 (the library nnU-Net v2 builds its
# networks with), computed once in a throwaway target dir, never a dependency of unetkit:
#
#   pip install --no-deps --target /tmp/dna dynamic-network-architectures==0.4.4   # torch 2.13 CPU
#   from torch import nn
#   from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
#   def common(d):  # exactly the kwargs nnU-Net v2's planners write into plans
#       return dict(conv_op=nn.Conv3d if d == 3 else nn.Conv2d, conv_bias=True,
#                   norm_op=nn.InstanceNorm3d if d == 3 else nn.InstanceNorm2d,
#                   norm_op_kwargs={'eps': 1e-5, 'affine': True}, dropout_op=None, dropout_op_kwargs=None,
#                   nonlin=nn.LeakyReLU, nonlin_kwargs={'inplace': True}, deep_supervision=True)
#   net = PlainConvUNet(input_channels=..., num_classes=..., **topology, **common(d))     # or ResidualEncoderUNet
#   sum(p.numel() for p in net.parameters()), net.compute_conv_feature_map_size(patch)
#
# with the topologies in REFERENCES below (kwargs as a plan writes them). The feature-map sizes of
# RESENC_M_3D at 128^3 (558319104) and RESENC_2D at 512^2 (129793792) are also the numbers printed
# in the __main__ block of nnunetv2 2.8.1's residual_encoder_unet_planners.py. (nnU-Net Revisited,
# MICCAI 2024, reports VRAM and training time for ResEnc M/L/XL, not parameter counts.)
# --------------------------------------------------------------------------------------------
HIPPOCAMPUS_3D = dict(n_stages=4, features_per_stage=[32, 64, 128, 256], kernel_sizes=[[3, 3, 3]] * 4,
                      strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[2, 2, 2, 2],
                      n_conv_per_stage_decoder=[2, 2, 2])
PLAIN_2D_512 = dict(n_stages=8, features_per_stage=[32, 64, 128, 256, 512, 512, 512, 512],
                    kernel_sizes=[[3, 3]] * 8, strides=[[1, 1]] + [[2, 2]] * 7, n_conv_per_stage=[2] * 8,
                    n_conv_per_stage_decoder=[2] * 7)
RESENC_M_3D = dict(n_stages=6, features_per_stage=[32, 64, 128, 256, 320, 320], kernel_sizes=[[3, 3, 3]] * 6,
                   strides=[[1, 1, 1]] + [[2, 2, 2]] * 5, n_blocks_per_stage=[1, 3, 4, 6, 6, 6],
                   n_conv_per_stage_decoder=[1] * 5)
RESENC_L_3D_ANISO = dict(n_stages=7, features_per_stage=[32, 64, 128, 256, 320, 320, 320],
                         kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 6,
                         strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                         n_blocks_per_stage=[1, 3, 4, 6, 6, 6, 6], n_conv_per_stage_decoder=[1] * 6)
RESENC_2D = dict(n_stages=7, features_per_stage=[32, 64, 128, 256, 512, 512, 512], kernel_sizes=[[3, 3]] * 7,
                 strides=[[1, 1]] + [[2, 2]] * 6, n_blocks_per_stage=[1, 3, 4, 6, 6, 6, 6],
                 n_conv_per_stage_decoder=[1] * 6)

# (id, name, dims, in_channels, num_classes, kwargs, patch, parameters, conv feature-map size)
REFERENCES = [
    ("hippocampus_3d_fullres", "plain_unet", 3, 1, 3, HIPPOCAMPUS_3D, (40, 56, 40), 5_603_177, 19_212_200),
    ("plain_2d_512", "plain_unet", 2, 3, 2, PLAIN_2D_512, (512, 512), 46_325_134, 82_799_232),
    ("resenc_m_3d", "resenc_unet_m", 3, 1, 3, RESENC_M_3D, (128, 128, 128), 102_350_575, 558_319_104),
    ("resenc_l_3d_aniso", "resenc_unet_l", 3, 1, 4, RESENC_L_3D_ANISO, (64, 256, 256), 141_399_768, 1_555_428_352),
    ("resenc_2d", "resenc_unet", 2, 1, 3, RESENC_2D, (512, 512), 105_918_322, 129_793_792),
]


_tiny = zoo_checks.tiny


def _cases() -> list[tuple[str, int]]:
    return [(n, d) for n in list_models() for d in model_info(n).spatial_dims]


# ---------------------------------------------------------------- generic, over list_models()
# Native kernels run on many shapes here; each body runs in an isolated worker process
# (tests/isolated.py) so that a crash inside a kernel fails that one test, named, not the run.
# One intra-op thread: on tiny tensors a second thread mostly costs synchronization (about 5-10x
# the CPU time on a busy 2-core machine; zoo_checks.with_threads), which 75+ models multiply.
ZOO_THREADS = 1


@pytest.mark.parametrize("name,dims", _cases())
def test_forward_backward_shapes(name: str, dims: int) -> None:
    run_isolated(zoo_checks.with_threads, ZOO_THREADS, zoo_checks.forward_backward_shapes, name, dims)


@pytest.mark.parametrize("name,dims", _cases())
def test_without_deep_supervision_and_eval(name: str, dims: int) -> None:
    run_isolated(zoo_checks.with_threads, ZOO_THREADS, zoo_checks.eval_without_deep_supervision, name, dims)


@pytest.mark.parametrize("name,dims", _cases())
def test_overfits_tiny_batch(name: str, dims: int) -> None:
    run_isolated(zoo_checks.with_threads, ZOO_THREADS, zoo_checks.overfits_tiny_batch, name, dims)


@pytest.mark.parametrize("name", list_models())
def test_metadata_and_defaults(name: str) -> None:
    info = model_info(name)
    assert info.name == name and info.family in list_families()
    assert set(info.spatial_dims) <= {2, 3} and info.paper and info.description
    d = info.as_dict()
    assert d["name"] == name
    for dims in info.spatial_dims:
        defaults = info.default_kwargs(dims)
        with torch.device("meta"):
            by_name = create_model(name, dims, 1, 2)
            explicit = create_model(name, dims, 1, 2, **defaults)
        # what "by name alone" means is what model_info says it means
        assert count_parameters(by_name) == count_parameters(explicit)
        assert [tuple(p.shape) for p in by_name.parameters()] == [tuple(p.shape) for p in explicit.parameters()]


@pytest.mark.parametrize("name,dims", _cases())
def test_state_dict_round_trip_safetensors(name: str, dims: int, tmp_path) -> None:
    run_isolated(zoo_checks.with_threads, ZOO_THREADS, zoo_checks.state_dict_round_trip_safetensors, name, dims,
                 str(tmp_path))


# ---------------------------------------------------------------- parameter counts, feature maps
@pytest.mark.parametrize("case", REFERENCES, ids=[r[0] for r in REFERENCES])
def test_parameter_count_and_feature_map_size_match_reference(case: tuple) -> None:
    _, name, dims, cin, ncls, kwargs, patch, n_params, fmap = case
    with torch.device("meta"):  # sizes only: no memory, no init
        model = create_model(name, dims, cin, ncls, **kwargs)
    assert count_parameters(model) == n_params
    assert conv_feature_map_size(model, patch) == fmap
    assert conv_feature_map_size({"name": name, "kwargs": kwargs}, patch, num_classes=ncls) == fmap


def test_resenc_presets_are_the_same_network_with_different_planner_rules() -> None:
    with torch.device("meta"):
        counts = {n: count_parameters(create_model(n, 3, 1, 3, **RESENC_M_3D))
                  for n in ("resenc_unet", "resenc_unet_m", "resenc_unet_l", "resenc_unet_xl")}
    assert set(counts.values()) == {102_350_575}   # dynamic-network-architectures' count (REFERENCES)
    assert model_info("resenc_unet_m").extra["vram_target_gb"] == 8
    assert model_info("resenc_unet_l").extra["vram_target_gb"] == 24
    assert model_info("resenc_unet_m").default_kwargs(3)["n_blocks_per_stage"] == [1, 3, 4, 6, 6]
    assert model_info("resenc_unet_l").default_kwargs(3)["n_conv_per_stage_decoder"] == [1, 1, 1, 1]


def test_plain_defaults_by_name() -> None:
    d3, d2 = model_info("plain_unet").default_kwargs(3), model_info("plain_unet").default_kwargs(2)
    assert d3["features_per_stage"] == [32, 64, 128, 256, 320]
    assert d2["features_per_stage"] == [32, 64, 128, 256, 512]
    assert d3["strides"][0] == [1, 1, 1] and d3["n_conv_per_stage"] == [2] * 5


def test_nnunet_initialization() -> None:
    torch.manual_seed(0)
    model = create_model("resenc_unet", 3, 1, 2, n_stages=3, features_per_stage=[16, 32, 64])
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    assert all(m.bias is None or torch.count_nonzero(m.bias) == 0 for m in convs)
    big = model.encoder[2][0].conv1.conv.weight  # fan_in 32*27: He std = sqrt(2/(1+0.01^2)/fan_in)
    assert abs(big.std().item() - (2 / 1.0001 / (32 * 27)) ** 0.5) < 0.003
    block = model.encoder[1][0]
    assert torch.count_nonzero(block.conv2.norm.weight) == 0  # residual branch starts at zero


@pytest.mark.reference
def test_matches_dynamic_network_architectures_numerically() -> None:
    """Same outputs as the reference library for the same weights (.ci/run installs it)."""
    unet = require_module("dynamic_network_architectures.architectures.unet",
                          "pip install --no-deps dynamic-network-architectures==0.4.4 (as .ci/run does)")
    nn = torch.nn
    common = dict(conv_bias=True, norm_op=nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                  dropout_op=None, dropout_op_kwargs=None, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
                  deep_supervision=True)
    rules = [(r"^encoder\.stages\.(\d+)\.0\.convs\.(\d+)\.", r"encoder.\1.\2."), (r"^encoder\.stem\.convs\.0\.", "stem."),
             (r"^encoder\.stages\.(\d+)\.blocks\.(\d+)\.skip\.", r"encoder.\1.\2.shortcut."),
             (r"^encoder\.stages\.(\d+)\.blocks\.(\d+)\.", r"encoder.\1.\2."),
             (r"^decoder\.stages\.(\d+)\.convs\.(\d+)\.", r"decoder.stages.\1.\2."),
             (r"^decoder\.transpconvs\.", "decoder.upsample."), (r"^decoder\.seg_layers\.", "decoder.heads.")]

    def convert(sd: dict) -> dict:
        out = {}
        for k, v in sd.items():
            if ".all_modules." in k or k.startswith("decoder.encoder."):
                continue  # the library registers these tensors twice
            for a, b in rules:
                if re.match(a, k):
                    k = re.sub(a, b, k)
                    break
            out[k] = v
        return out

    torch.manual_seed(0)
    topo = dict(n_stages=4, features_per_stage=[8, 16, 32, 48], kernel_sizes=[[1, 3], [3, 3], [3, 3], [3, 3]],
                strides=[[1, 1], [1, 2], [2, 2], [2, 2]])
    pairs = [(unet.PlainConvUNet(2, **topo, conv_op=nn.Conv2d, n_conv_per_stage=2, num_classes=3,
                                 n_conv_per_stage_decoder=2, **common), create_model("plain_unet", 2, 2, 3, **topo)),
             (unet.ResidualEncoderUNet(2, **topo, conv_op=nn.Conv2d, n_blocks_per_stage=[1, 2, 2, 2], num_classes=3,
                                       n_conv_per_stage_decoder=1, **common),
              create_model("resenc_unet", 2, 2, 3, n_blocks_per_stage=[1, 2, 2, 2], **topo))]
    x = torch.randn(2, 2, 32, 48)
    for ref, ours in pairs:
        for m in ref.modules():  # non-trivial norms (ResEnc zero-inits some)
            if isinstance(m, nn.InstanceNorm2d):
                nn.init.normal_(m.weight)
                nn.init.normal_(m.bias)
        ours.load_state_dict(convert(ref.state_dict()), strict=True)
        with torch.no_grad():
            for a, b in zip(ref.eval()(x), ours.eval()(x)):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- registry behaviour
def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown model 'plain_unt'.*Did you mean 'plain_unet'"):
        create_model("plain_unt", 3, 1, 2)
    with pytest.raises(KeyError, match="Known models: .*resenc_unet_m"):
        model_info("zzz")


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword\(s\) \['n_blocks_per_stage'\]"):
        create_model("plain_unet", 3, 1, 2, n_blocks_per_stage=[1, 2])
    with pytest.raises(ValueError, match="supports spatial_dims"):
        create_model("plain_unet", 1, 1, 2)
    with pytest.raises(ValueError, match="features_per_stage needs 4 entries"):
        create_model("plain_unet", 3, 1, 2, n_stages=4, features_per_stage=[8, 16])
    with pytest.raises(ValueError, match=r"kernel_sizes\[1\] must be 3 positive integers"):
        create_model("plain_unet", 3, 1, 2, n_stages=3, kernel_sizes=[3, [3, 3], 3])
    model = create_model("plain_unet", 2, 1, 2, n_stages=3, features_per_stage=[4, 8, 16])
    with pytest.raises(ValueError, match=r"must be a multiple of \(4, 4\)"):
        model(torch.zeros(1, 1, 30, 32))
    # None means "the default" (as timm): a plan may write null
    assert count_parameters(create_model("plain_unet", 2, 1, 2, n_stages=3, features_per_stage=[4, 8, 16],
                                         kernel_sizes=None)) > 0


def test_list_models_filters() -> None:
    names = list_models()
    assert {"plain_unet", "resenc_unet", "resenc_unet_m", "resenc_unet_l"} <= set(names)
    assert names == sorted(names)
    assert list_models("resenc*") == [n for n in names if n.startswith("resenc")]
    assert set(list_models(spatial_dims=3)) >= {"plain_unet", "resenc_unet_l"}
    assert set(list_models(family="nnunet")) >= {"plain_unet", "resenc_unet_m"}
    assert list_models(family="no_such_family") == []
    assert "plain_unet" in list_models(deep_supervision=True)
    assert "plain_unet" not in list_models(deep_supervision=False)
    assert all(2 in model_info(n).spatial_dims for n in list_models(spatial_dims=2))


def test_register_model_rejects_duplicates_and_checks_deep_supervision() -> None:
    from unetkit.models import registry

    with pytest.raises(ValueError, match="registered twice"):
        register_model(family="nnunet", paper="x", name="plain_unet")(lambda *a, **k: torch.nn.Identity())
    try:
        @register_model(family="test", paper="none", spatial_dims=(2,), deep_supervision=False, name="_test_flat")
        def _flat(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
                  width: int = 4) -> torch.nn.Module:
            """A 1x1 conv, for this test."""
            return torch.nn.Conv2d(in_channels, num_classes, 1)

        assert "_test_flat" in list_models(deep_supervision=False, family="test")
        with pytest.raises(ValueError, match="deep_supervision=False"):
            create_model("_test_flat", 2, 1, 2, deep_supervision=True)
        assert isinstance(create_model("_test_flat", 2, 1, 2, deep_supervision=False, width=8), torch.nn.Conv2d)
        # Left unsaid, deep supervision follows what the model has.
        assert isinstance(create_model("_test_flat", 2, 1, 2, width=8), torch.nn.Conv2d)
    finally:
        registry._REGISTRY.pop("_test_flat", None)


def test_channels_last_3d_gives_the_same_outputs() -> None:
    """channels_last_3d (faster oneDNN 3D convolutions on CPU) changes layout, not numbers."""
    torch.manual_seed(0)
    model = _tiny("resenc_unet", 3).eval()
    x = torch.randn(1, 2, *PATCHES[3])
    with torch.no_grad():
        ref = model(x)
        model.to(memory_format=torch.channels_last_3d)
        out = model(x.contiguous(memory_format=torch.channels_last_3d))
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- torch.compile
def test_torch_compile_tiny_model() -> None:
    """torch.compile (inductor) traces and runs forward + backward of a tiny model; the compiled
    outputs equal eager ones. ~30-60 s on 2 busy cores (C++ compilation)."""
    torch.manual_seed(0)
    model = create_model("plain_unet", 2, 1, 2, n_stages=3, features_per_stage=[4, 8, 16])
    compiled = torch.compile(model)
    x = torch.randn(2, 1, 16, 24)
    t0 = time.perf_counter()
    outs = compiled(x)
    sum(o.sum() for o in outs).backward()
    with torch.no_grad():
        for a, b in zip(outs, model(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert time.perf_counter() - t0 < 600


def test_fixed_size_models_are_built_for_the_training_patch() -> None:
    """A ViT-style model's position table is sized for the patch it trains on: the plan's
    40x56x40 padded to UNETR's multiple of 16 gives 3*4*3 = 36 tokens (not the paper's 96^3 = 216)."""
    from unetkit.models import model_patch, patch_keyword
    from unetkit.training.config import TrainingConfig
    from unetkit.training.trainer import network_spec

    assert patch_keyword("unetr") == "img_size" and patch_keyword("plain_unet") is None
    assert model_patch("unetr", [40, 56, 40]) == [48, 64, 48]
    plans = {"num_input_channels": 1}
    entry = {"patch_size": [40, 56, 40],
             "architecture": {"name": "plain_unet", "kwargs": {"n_stages": 4, "features_per_stage": [8, 16, 32, 64]}}}
    spec = network_spec(plans, entry, TrainingConfig(arch="unetr"), num_heads=3)
    assert spec["kwargs"]["img_size"] == [48, 64, 48]
    spec["kwargs"].update(hidden_size=32, mlp_dim=64, num_layers=4, num_heads=2, feature_size=4)
    with torch.device("meta"):
        model = create_model("unetr", 3, 1, 3, deep_supervision=False, **spec["kwargs"])
    assert model.pos_embed.shape[1] == 3 * 4 * 3
