"""The 3D workhorses of the zoo (SegResNet, V-Net, HighResNet) against MONAI, their independent reference.

Neither SegResNet's nor V-Net's paper prints a parameter count (Myronenko 2018 and Milletari et
al. 2016 give none), and HighResNet's (Li et al. 2017) could not be checked offline, so
the count is checked to equal exactly the count of MONAI's network built in the paper's
configuration, and MONAI's weights, renamed, give the same outputs in ours. The generic tests in
tests/test_models.py cover forward / backward / overfitting / state-dict round trips with each
model's tiny configuration.
"""

from __future__ import annotations

import re

import pytest
import torch
from references import require_module

from unetkit.models import count_parameters, create_model, model_info

MONAI_HINT = "pip install -e '.[dev]' (MONAI is in the dev extra)"

# (name, dims, in, classes, our kwargs, MONAI class, MONAI kwargs, configuration)
MONAI_COUNTS = [
    ("segresnet", 3, 4, 3, {}, "SegResNet",
     {"init_filters": 32, "blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1)},
     "Myronenko 2018 Fig. 1 / Table 1: BraTS, 4 MRI modalities in, 3 regions out, 32 initial filters"),
    ("segresnet", 2, 1, 2, {}, "SegResNet", {"init_filters": 32, "blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1)},
     "the same design in 2D"),
    ("vnet", 3, 1, 2, {}, "VNet", {"act": "prelu"},
     "Milletari 2016 Fig. 1: 1 in, 2 classes (foreground / background), 16..256 features, PReLU"),
    ("vnet", 3, 1, 2, {"act": "elu", "dropout": 0.5}, "VNet", {}, "MONAI's defaults (ELU, dropout 0.5)"),
    ("highresnet", 3, 1, 160, {}, "HighResNet", {},
     "Li 2017 Fig. 1: 1 T1 in, 155 structures + background (160 outputs as NiftyNet's parcellation model), "
     "16/32/64 features x 3 blocks, dilation 1/2/4, 80-feature 1x1 layer"),
    ("highresnet", 2, 3, 4, {}, "HighResNet", {}, "the same design in 2D"),
    ("quicknat", 2, 1, 28, {"norm": "instance"}, "Quicknat", {},
     "Roy 2019 Fig. 1: 1 T1 slice in, 27 structures + background, 64 filters, 5x5, MONAI's instance norm"),
]


def _monai(cls: str, dims: int, cin: int, ncls: int, **kwargs) -> torch.nn.Module:
    nets = require_module("monai.networks.nets", MONAI_HINT)
    if cls == "Quicknat":  # 2D only, its own argument names
        return nets.Quicknat(num_classes=ncls, num_channels=cin, **kwargs)
    return getattr(nets, cls)(spatial_dims=dims, in_channels=cin, out_channels=ncls, **kwargs)


@pytest.mark.reference
@pytest.mark.parametrize("name,dims,cin,ncls,ours,cls,theirs,config", MONAI_COUNTS,
                         ids=[f"{c[0]}-{c[1]}d-{c[5]}{i}" for i, c in enumerate(MONAI_COUNTS)])
def test_parameter_count_equals_monai(name: str, dims: int, cin: int, ncls: int, ours: dict, cls: str,
                                      theirs: dict, config: str) -> None:
    reference = _monai(cls, dims, cin, ncls, **theirs)
    with torch.device("meta"):
        model = create_model(name, dims, cin, ncls, deep_supervision=False, **ours)
    assert count_parameters(model) == count_parameters(reference), config


def test_parameter_count_snapshots() -> None:
    """Our exact counts (docs/models.md); MONAI's equal them (test above). Snapshots only flag a
    changed layout; the papers print no count (``extra["paper_params"] is None``)."""
    with torch.device("meta"):
        assert count_parameters(create_model("segresnet", 3, 4, 3)) == 18_798_627
        assert count_parameters(create_model("vnet", 3, 1, 2)) == 45_601_516
        assert count_parameters(create_model("highresnet", 3, 1, 160)) == 821_904
        quicknat_batch_norm = count_parameters(create_model("quicknat", 2, 1, 28))
        paper_fig1 = create_model("vnet", 3, 1, 2, encoder_convs=[2, 3, 3, 3], decoder_convs=[3, 3, 2, 1])
    # QuickNAT with the paper's batch norm = MONAI's instance-norm count (3,508,919, test above) + 2
    # per normalized channel: the encoder's first block normalizes 1, 65, 129 channels, the other 3
    # encoder blocks and the bottleneck 64, 128, 192, the 4 decoder blocks 128, 192, 256
    normalized = (1 + 65 + 129) + 4 * (64 + 128 + 192) + 4 * (128 + 192 + 256)
    assert quicknat_batch_norm == 3_508_919 + 2 * normalized
    # Fig. 1 has one more 5^3 convolution (no bias) + batch norm (2c) + PReLU (c) in encoder stages
    # 32, 64, 256 (2, 3, 3, 3 vs 1, 2, 3, 2) and decoder stages 256, 128, 64 (3, 3, 2 vs 2, 2, 1)
    def conv5(c: int) -> int:
        return 125 * c * c + 3 * c
    extra = conv5(32) + 2 * conv5(64) + conv5(128) + 2 * conv5(256)
    assert count_parameters(paper_fig1) == 45_601_516 + extra
    for name in ("segresnet", "vnet", "highresnet", "quicknat"):
        assert model_info(name).extra["paper_params"] is None


# MONAI state-dict keys -> ours (renaming only; every tensor must find its place: strict load)
SEGRESNET_RULES = [(r"\.conv\.(weight|bias)$", r".\1"), (r"^convInit\.", "stem."), (r"^down_layers\.", "encoder."),
                   (r"^up_layers\.", "decoder."), (r"^up_samples\.(\d+)\.0\.", r"reduce.\1."),
                   (r"^conv_final\.0\.", "head_norm."), (r"^conv_final\.2\.", "head.")]
VNET_RULES = [(r"^in_tr\.", "input_block."), (r"^out_tr\.conv2\.", "head."), (r"^out_tr\.", "output_block."),
              (r"^down_tr(32|64|128|256)\.", lambda m: f"down.{[32, 64, 128, 256].index(int(m.group(1)))}."),
              (r"^up_tr(256|128|64|32)\.", lambda m: f"up.{[256, 128, 64, 32].index(int(m.group(1)))}."),
              (r"conv_block\.conv\.", "conv."), (r"conv_block\.adn\.N\.", "norm."), (r"\.ops\.", ".convs."),
              (r"\.act_function1?\.", ".act."), (r"\.act_function2\.", ".out_act.")]

HIGHRESNET_RES_BLOCKS = 9  # MONAI's blocks.1 .. blocks.9 are the residual blocks of the default layout
HIGHRESNET_RULES = [
    (r"^blocks\.(\d+)\.", lambda m: {0: "stem.", HIGHRESNET_RES_BLOCKS + 1: "head_layer.",
                                       HIGHRESNET_RES_BLOCKS + 2: "classifier."}.get(
                                           int(m.group(1)), f"res.{int(m.group(1)) - 1}.")),
    (r"^(stem|head_layer|classifier)\.conv\.", r"\1.0."), (r"^(stem|head_layer|classifier)\.adn\.N\.", r"\1.1."),
    (r"^res\.", "blocks."), (r"\.layers\.0\.N\.", ".norm1."), (r"\.layers\.1\.conv\.", ".conv1."),
    (r"\.layers\.2\.N\.", ".norm2."), (r"\.layers\.3\.conv\.", ".conv2.")]



def _quicknat_key(key: str) -> str:
    """MONAI nests QuickNAT level by level: ``model.`` + ``1.submodule.`` per level down, then
    ``0.`` (encoder block), ``2.`` (decoder block) or nothing (the bottleneck); ``model.3`` is the
    classifier."""
    if key.startswith("model.3.conv."):
        return "classifier." + key[len("model.3.conv."):]
    match = re.fullmatch(r"model\.((?:1\.submodule\.)*)(?:([02])\.)?layers([012])\.(0\.A|1)\.(weight|bias)", key)
    level, where, layer, part, tensor = match.groups()
    level = level.count("submodule")
    block = {"0": f"encoder.{level}", "2": f"decoder.{level}", None: "bottleneck"}[where]
    return f"{block}.{['first', 'second', 'compress'][int(layer)]}.{'act' if part == '0.A' else 'conv'}.{tensor}"


def _rename(state: dict, rules: list, stage_rules: list = ()) -> dict:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        for pattern, repl in stage_rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


# in V-Net's stages the reference's first activation / norm are the down / up path's
VNET_STAGE_RULES = [(r"^(down\.\d+)\.act\.", r"\1.down_act."), (r"^(up\.\d+)\.act\.", r"\1.up_act."),
                    (r"^(down\.\d+)\.bn1\.", r"\1.down_norm."), (r"^(up\.\d+)\.bn1\.", r"\1.up_norm.")]


def _randomize_norms_(model: torch.nn.Module) -> None:
    """Non-trivial affine norms, running statistics and PReLU slopes, so that a misplaced
    tensor changes the output."""
    for m in model.modules():
        if isinstance(m, (torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm)):
            torch.nn.init.normal_(m.weight, 1.0, 0.2)
            torch.nn.init.normal_(m.bias, 0.0, 0.2)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0.0, 0.2)
            m.running_var.uniform_(0.5, 1.5)
        if isinstance(m, torch.nn.PReLU):
            torch.nn.init.uniform_(m.weight, 0.0, 0.5)


NUMERIC_CASES = [
    ("segresnet", 3, 2, 3, {"init_filters": 8, "dropout": 0.0}, "SegResNet", {"init_filters": 8}, (16, 24, 16)),
    ("segresnet", 2, 1, 2, {"init_filters": 16, "dropout": 0.0}, "SegResNet", {"init_filters": 16}, (32, 48)),
    ("vnet", 3, 1, 2, {}, "VNet", {"act": "prelu"}, (16, 16, 32)),
    ("vnet", 2, 2, 3, {"act": "elu"}, "VNet", {}, (32, 48)),
    ("highresnet", 3, 1, 3, {}, "HighResNet", {}, (12, 17, 10)),
    ("highresnet", 2, 2, 4, {}, "HighResNet", {}, (21, 30)),
    ("quicknat", 2, 2, 3, {"filters": 16, "norm": "instance"}, "Quicknat", {"num_filters": 16}, (32, 48)),
]
RENAME_RULES = {"segresnet": (SEGRESNET_RULES, ()), "vnet": (VNET_RULES, VNET_STAGE_RULES),
                "highresnet": (HIGHRESNET_RULES, ()), "quicknat": ([(r"^.*$", lambda m: _quicknat_key(m.group(0)))], ())}


def _drop_logit_relu_(reference: torch.nn.Module, name: str) -> None:
    """MONAI's HighResNet ends with a ReLU on its logits (no parameters); NiftyNet's official
    highres3dnet, which we follow, ends with batch norm. Remove it so the rest is compared."""
    if name == "highresnet":
        reference.blocks[-1].adn.A = torch.nn.Identity()


@pytest.mark.reference
@pytest.mark.parametrize("name,dims,cin,ncls,ours,cls,theirs,patch", NUMERIC_CASES,
                         ids=[f"{c[0]}-{c[1]}d-{i}" for i, c in enumerate(NUMERIC_CASES)])
def test_same_outputs_as_monai_for_the_same_weights(name: str, dims: int, cin: int, ncls: int, ours: dict,
                                                    cls: str, theirs: dict, patch: tuple) -> None:
    torch.manual_seed(0)
    reference = _monai(cls, dims, cin, ncls, **theirs)
    _randomize_norms_(reference)
    model = create_model(name, dims, cin, ncls, deep_supervision=False, **ours)
    _drop_logit_relu_(reference, name)
    state = _rename(reference.state_dict(), *RENAME_RULES[name])
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, cin, *patch)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference.eval()(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["segresnet", "vnet", "highresnet"])
def test_declared_divisibility_and_padding_of_other_sizes(name: str) -> None:
    """``extra["divisible_by"]`` is what the default network pools by (the trainer rounds the
    plan patch up to it); other sizes are padded and cropped, so prediction takes any size."""
    with torch.device("meta"):
        default = create_model(name, 3, 1, 2)
    assert model_info(name).extra["divisible_by"] == default.divisible_by
    torch.manual_seed(0)
    model = create_model(name, 3, 1, 2, **model_info(name).tiny_kwargs).eval()
    x = torch.randn(1, 1, 9, 13, 11)
    m = model.divisible_by  # 4 (SegResNet) / 8 (V-Net) / 1 (HighResNet: no pooling) in the tiny configurations
    up = [-(-s // m) * m - s for s in (9, 13, 11)]  # zeros to the next multiple, at the end of each axis
    with torch.no_grad():
        out = model(x)
        padded = model(torch.nn.functional.pad(x, (0, up[2], 0, up[1], 0, up[0])))
    assert out.shape == (1, 2, 9, 13, 11)
    torch.testing.assert_close(out, padded[:, :, :9, :13, :11])  # eval: no batch statistics


def test_bad_configurations_are_clear() -> None:
    with pytest.raises(ValueError, match="in_channels .3. must divide features .16."):
        create_model("vnet", 3, 3, 2)
    with pytest.raises(ValueError, match="one entry fewer"):
        create_model("segresnet", 3, 1, 2, blocks_down=[1, 2], blocks_up=[1, 1])
    with pytest.raises(ValueError, match="divisible by norm_groups"):
        create_model("segresnet", 3, 1, 2, init_filters=12)
    with pytest.raises(ValueError, match="act must be one of"):
        create_model("vnet", 3, 1, 2, act="relu")
    with pytest.raises(ValueError, match=r"supports spatial_dims \[2\], got 3"):
        create_model("quicknat", 3, 1, 2)
    with pytest.raises(ValueError, match="norm must be one of"):
        create_model("quicknat", 2, 1, 2, norm="group")
    with pytest.raises(ValueError, match="cannot narrow the features .32 -> 16."):
        create_model("highresnet", 3, 1, 2, features=[32, 16])
