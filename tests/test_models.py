"""Models: torchvision parity, parameter counts, variants, design space, input limits, summary."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

import squeezenet
from squeezenet.errors import ModelError
from squeezenet.models import (
    V1_0,
    Fire,
    FireSpec,
    SqueezeNet,
    build_architecture,
    design_space,
    list_models,
)
from squeezenet.models.summary import layer_table, totals

# features indices of fire2..fire9 in v1.0 (pools at 2, 6, 11)
FIRE_INDEX_V1_0 = {2: 3, 3: 4, 4: 5, 5: 7, 6: 8, 7: 9, 8: 10, 9: 12}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_torchvision_parity(name):
    ours = build_architecture(name).eval()
    theirs = getattr(torchvision.models, name)().eval()
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    assert {k: tuple(v.shape) for k, v in ours_sd.items()} == {k: tuple(v.shape) for k, v in theirs_sd.items()}
    # random (non-default) weights, loaded into both
    torch.manual_seed(1)
    random_sd = {k: torch.randn_like(v) * 0.05 for k, v in theirs_sd.items()}
    theirs.load_state_dict(random_sd)
    ours.load_state_dict(random_sd)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.shape == b.shape == (2, 1000)
    assert float(a.abs().max()) > 0  # not a trivially zero comparison
    assert float((a - b).abs().max()) < 1e-6


def test_exact_parameter_counts():
    assert n_params(build_architecture("squeezenet1_0")) == 1_248_424
    assert n_params(build_architecture("squeezenet1_1")) == 1_235_496
    assert n_params(build_architecture("squeezenet1_0_caffe")) == 1_248_424


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_and_runs(name):
    model = build_architecture(name, num_classes=7).eval()
    assert isinstance(model, SqueezeNet)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_registry_is_complete():
    names = set(list_models())
    for expected in [
        "squeezenet1_0",
        "squeezenet1_1",
        "squeezenet1_0_caffe",
        "squeezenet1_0_simple_bypass",
        "squeezenet1_0_complex_bypass",
        "squeezenet_design",
        "squeezenet_cifar",
    ]:
        assert expected in names


def test_simple_bypass_same_params_identity_on_odd_fires():
    model = build_architecture("squeezenet1_0_simple_bypass")
    assert n_params(model) == 1_248_424
    for fire, index in FIRE_INDEX_V1_0.items():
        module = model.features[index]
        assert isinstance(module, Fire)
        assert module.shortcut_kind == ("identity" if fire % 2 else None)
        assert not hasattr(module, "shortcut")


def test_complex_bypass_conv_shortcuts_exactly_on_even_fires():
    model = build_architecture("squeezenet1_0_complex_bypass")
    plain = build_architecture("squeezenet1_0")
    extra = 0
    for fire, index in FIRE_INDEX_V1_0.items():
        module = model.features[index]
        assert isinstance(module, Fire)
        if fire % 2 == 0:
            assert module.shortcut_kind == "conv"
            assert isinstance(module.shortcut, nn.Conv2d)
            assert module.shortcut.kernel_size == (1, 1)
            assert module.shortcut.in_channels == module.inplanes
            assert module.shortcut.out_channels == module.out_channels
            extra += n_params(module.shortcut)
        else:
            assert module.shortcut_kind == "identity"
            assert not hasattr(module, "shortcut")
    conv_shortcut_keys = sorted(k for k in model.state_dict() if ".shortcut." in k)
    assert conv_shortcut_keys == sorted(
        f"features.{FIRE_INDEX_V1_0[f]}.shortcut.{p}" for f in (2, 4, 6, 8) for p in ("weight", "bias")
    )
    assert n_params(model) == n_params(plain) + extra


def test_bypass_changes_the_output():
    """The shortcut is really added in forward: same weights, different result."""
    plain = build_architecture("squeezenet1_0").eval()
    simple = build_architecture("squeezenet1_0_simple_bypass").eval()
    simple.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        f_plain = plain.features[:5](x)
        f_simple = simple.features[:5](x)
        # fire3 (index 4) with identity: output = fire(x) + x
        before = plain.features[:4](x)
        assert torch.allclose(f_simple, f_plain + before, atol=1e-5)


def test_identity_bypass_needs_equal_channels():
    with pytest.raises(ValueError, match="equal channels"):
        Fire(96, 16, 64, 64, shortcut="identity")
    with pytest.raises(ValueError, match="unknown shortcut"):
        Fire(128, 16, 64, 64, shortcut="bogus")


def test_caffe_v1_0_has_padded_conv10():
    caffe = build_architecture("squeezenet1_0_caffe")
    plain = build_architecture("squeezenet1_0")
    assert caffe.final_conv.padding == (1, 1)
    assert plain.final_conv.padding == (0, 0)
    assert caffe.final_conv is caffe.classifier[1]


def test_design_space_defaults_are_v1_0():
    assert design_space() == V1_0
    assert design_space().fires == (
        FireSpec(16, 64, 64),
        FireSpec(16, 64, 64),
        FireSpec(32, 128, 128),
        FireSpec(32, 128, 128),
        FireSpec(48, 192, 192),
        FireSpec(48, 192, 192),
        FireSpec(64, 256, 256),
        FireSpec(64, 256, 256),
    )
    assert design_space().pool_after == (2, 6)


@pytest.mark.parametrize(
    ("kwargs", "base_e", "incr_e", "freq", "sr", "pct"),
    [
        ({"sr": 0.25}, 128, 128, 2, 0.25, 0.5),
        ({"pct3x3": 0.75}, 128, 128, 2, 0.125, 0.75),
        ({"sr": 0.75, "pct3x3": 0.25, "base_e": 64, "incr_e": 32, "freq": 3}, 64, 32, 3, 0.75, 0.25),
    ],
)
def test_design_space_formula(kwargs, base_e, incr_e, freq, sr, pct):
    spec = design_space(**kwargs)
    assert len(spec.fires) == 8
    for i, fire in enumerate(spec.fires):
        e = base_e + incr_e * math.floor(i / freq)
        assert fire.expand1x1 + fire.expand3x3 == e
        assert fire.expand3x3 == round(pct * e)
        assert fire.squeeze == round(sr * e)
    # hand-checked numbers for SR=0.25 and pct3x3=0.75
    if kwargs == {"sr": 0.25}:
        assert [f.squeeze for f in spec.fires] == [32, 32, 64, 64, 96, 96, 128, 128]
    if kwargs == {"pct3x3": 0.75}:
        assert [(f.expand1x1, f.expand3x3) for f in spec.fires[::2]] == [(32, 96), (64, 192), (96, 288), (128, 384)]


def test_design_model_builds_from_kwargs():
    model = build_architecture("squeezenet_design", sr=0.25, pct3x3=0.75, num_classes=5)
    assert model.spec == design_space(sr=0.25, pct3x3=0.75)
    assert model.features[3].squeeze.out_channels == 32
    assert model.features[3].expand3x3.out_channels == 96
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 48, 48)).shape == (1, 5)
    stem = build_architecture("squeezenet_design", stem_channels=64, stem_kernel=3)  # every design_space argument
    assert stem.spec == design_space(stem_channels=64, stem_kernel=3)
    assert stem.features[0].out_channels == 64 and stem.features[0].kernel_size == (3, 3)


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet_design"])
def test_unknown_model_option_names_the_accepted_ones(name):
    with pytest.raises(ModelError, match=r"unknown model option\(s\) widht; this model takes: num_classes") as err:
        build_architecture(name, widht=2)
    assert ("base_e" in str(err.value)) == (name == "squeezenet_design")


def test_design_space_rejects_bad_values():
    with pytest.raises(ModelError):
        design_space(sr=0.0)
    with pytest.raises(ModelError):
        design_space(pct3x3=1.5)
    with pytest.raises(ModelError):
        design_space(pct3x3=1.0)  # no 1x1 expand filters left


def test_num_classes_in_chans_dropout():
    model = build_architecture("squeezenet1_1", num_classes=10, in_chans=1, dropout=0.2)
    assert model.features[0].in_channels == 1
    assert model.final_conv.out_channels == 10
    assert model.classifier[0].p == 0.2
    with torch.no_grad():
        assert model.eval()(torch.rand(3, 1, 40, 40)).shape == (3, 10)
    with pytest.raises(ModelError, match=r"\(N, 1, H, W\)"):
        model(torch.rand(1, 3, 40, 40))
    with pytest.raises(ModelError):
        build_architecture("squeezenet1_1", num_classes=0)
    with pytest.raises(ModelError):
        build_architecture("squeezenet1_1", dropout=1.0)


def test_dropout_is_active_only_in_training():
    model = build_architecture("squeezenet1_1", num_classes=4, dropout=0.5)
    x = torch.rand(1, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    with torch.no_grad():
        outs = [model(x) for _ in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize(("name", "minimum"), [("squeezenet1_0", 21), ("squeezenet1_1", 17)])
def test_minimum_input_size(name, minimum):
    model = build_architecture(name, num_classes=3).eval()
    assert model.min_input_size == minimum
    with torch.no_grad():
        assert model(torch.rand(1, 3, minimum, minimum)).shape == (1, 3)
        with pytest.raises(ModelError, match=f"smaller than this model's minimum of {minimum}x{minimum}"):
            model(torch.rand(1, 3, minimum - 1, minimum - 1))
        with pytest.raises(ModelError, match="minimum"):
            model(torch.rand(1, 3, 64, minimum - 1))
        # the minimum is tight: torch itself fails one pixel below it
        with pytest.raises(RuntimeError):
            model.features(torch.rand(1, 3, minimum - 1, minimum - 1))


def test_create_model_unknown_name():
    with pytest.raises(ModelError, match=r"unknown model 'squeezenet9'.*squeezenet1_0"):
        build_architecture("squeezenet9")
    with pytest.raises(ModelError, match="needs a model name or weights"):
        squeezenet.create_model()


def test_layer_table_v1_0():
    rows = layer_table(build_architecture("squeezenet1_0"), 224)
    names = [r.name for r in rows]
    assert names == [
        "conv1",
        "maxpool1",
        "fire2",
        "fire3",
        "fire4",
        "maxpool4",
        "fire5",
        "fire6",
        "fire7",
        "fire8",
        "maxpool8",
        "fire9",
        "conv10",
        "avgpool10",
    ]
    by_name = {r.name: r for r in rows}
    # paper Table 1 shapes and Fire sizes
    assert by_name["conv1"].output_shape == (96, 109, 109)
    assert by_name["maxpool1"].output_shape == (96, 54, 54)
    assert by_name["fire9"].output_shape == (512, 13, 13)
    assert (by_name["fire2"].squeeze1x1, by_name["fire2"].expand1x1, by_name["fire2"].expand3x3) == (16, 64, 64)
    assert by_name["conv10"].output_shape == (1000, 13, 13)
    assert by_name["conv10"].params == 513_000
    t = totals(rows)
    assert t["params"] == 1_248_424
    assert t["macs"] == pytest.approx(0.82e9, rel=0.01)


def test_layer_table_v1_1_and_training_mode_kept():
    model = build_architecture("squeezenet1_1")
    model.train()
    t = totals(layer_table(model, 224))
    assert model.training  # layer_table restores the mode
    assert t["params"] == 1_235_496
    assert t["macs"] == pytest.approx(0.35e9, rel=0.01)
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed
