"""Tests of the backbones layer: shared interface, normalisation, config round trip, weight loading, ViT SPT/LSA."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from lightning_unlearn.backbones import (
    AllCNN,
    Backbone,
    ResNet18,
    ViT,
    allcnn,
    build_backbone,
    load_weights,
    resnet18,
    vit,
)
from lightning_unlearn.backbones.vit import LocalitySelfAttention, ShiftedPatchTokenization

NUM_CLASSES = 5
SIZE = 8

# Tiny versions of every backbone (ResNet-18 has no width knob; at 8x8 it is still fast).
FACTORIES: dict[str, Callable[..., Backbone]] = {
    "resnet18": lambda **kw: ResNet18(num_classes=NUM_CLASSES, image_size=SIZE, **kw),
    "allcnn": lambda **kw: AllCNN(num_classes=NUM_CLASSES, image_size=SIZE, width=0.1, dropout=0.5, **kw),
    "vit": lambda **kw: ViT(
        num_classes=NUM_CLASSES, image_size=SIZE, patch_size=2, embed_dim=32, depth=2, num_heads=4, **kw
    ),
    "vit_spt_lsa": lambda **kw: ViT(
        num_classes=NUM_CLASSES,
        image_size=SIZE,
        patch_size=2,
        embed_dim=32,
        depth=2,
        num_heads=4,
        shifted_patch_tokens=True,
        locality_self_attention=True,
        **kw,
    ),
}
FEATURE_DIMS = {"resnet18": 512, "allcnn": 19, "vit": 32, "vit_spt_lsa": 32}
NAMES = list(FACTORIES)
CHANNELS = [1, 3]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: intra-op threading only adds synchronisation cost (severe on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _make(name: str, in_channels: int, normalised: bool = False) -> Backbone:
    torch.manual_seed(0)
    kw: dict = {"in_channels": in_channels}
    if normalised:
        kw["mean"] = [0.5, 0.4, 0.3][:in_channels]
        kw["std"] = [0.25, 0.2, 0.3][:in_channels]
    return FACTORIES[name](**kw).eval()


def _images(in_channels: int, n: int = 3) -> torch.Tensor:
    return torch.rand(n, in_channels, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


# -- shared interface -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_channels", CHANNELS)
@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_head(name: str, in_channels: int) -> None:
    model = _make(name, in_channels)
    x = _images(in_channels)
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
    assert logits.shape == (3, NUM_CLASSES)
    assert feats.shape == (3, FEATURE_DIMS[name]) and model.feature_dim == FEATURE_DIMS[name]
    assert isinstance(model.head, torch.nn.Linear)
    torch.testing.assert_close(logits, model.head(feats))


@pytest.mark.parametrize("in_channels", CHANNELS)
@pytest.mark.parametrize("name", NAMES)
def test_normalisation_is_inside_the_model(name: str, in_channels: int) -> None:
    model = _make(name, in_channels, normalised=True)
    plain = _make(name, in_channels)  # identity normalisation
    trunk = {k: v for k, v in model.state_dict().items() if k not in ("mean", "std")}
    plain.load_state_dict(trunk, strict=False)
    assert torch.all(plain.mean == 0) and torch.all(plain.std == 1)

    x = _images(in_channels)
    with torch.no_grad():
        expected = plain((x - model.mean) / model.std)
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model.features(x), plain.features((x - model.mean) / model.std))
        assert not torch.allclose(model(x), plain(x))


@pytest.mark.parametrize("in_channels", CHANNELS)
@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name: str, in_channels: int) -> None:
    model = _make(name, in_channels, normalised=True)
    config = model.config()
    assert json.loads(json.dumps(config)) == config  # plain data, storable in hparams / YAML
    assert "weights" not in config["init_args"]

    rebuilt = build_backbone(config).eval()
    assert type(rebuilt) is type(model) and rebuilt.config() == config
    rebuilt.load_state_dict(model.state_dict())
    x = _images(in_channels)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("in_channels", CHANNELS)
@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_input(name: str, in_channels: int) -> None:
    model = _make(name, in_channels, normalised=True)
    x = _images(in_channels).requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x), torch.arange(3) % NUM_CLASSES).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# -- weights -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_channels", CHANNELS)
@pytest.mark.parametrize("name", NAMES)
def test_load_weights_from_state_dict_and_lightning_checkpoint(tmp_path, name: str, in_channels: int) -> None:
    source = _make(name, in_channels, normalised=True)
    x = _images(in_channels)
    with torch.no_grad():
        expected = source(x)

    raw = tmp_path / "raw.pt"
    torch.save(source.state_dict(), raw)
    ckpt = tmp_path / "module.ckpt"
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    state.update({f"original.{k}": torch.zeros_like(v) for k, v in source.state_dict().items()})  # frozen copy
    torch.save({"epoch": 3, "global_step": 10, "state_dict": state, "hyper_parameters": {"lr": 0.1}}, ckpt)

    for path in (raw, str(ckpt)):
        torch.manual_seed(123)  # different init from the source
        target = FACTORIES[name](in_channels=in_channels).eval()
        assert load_weights(target, path) is target
        with torch.no_grad():
            torch.testing.assert_close(target(x), expected, rtol=0, atol=0)

    via_init = build_backbone({**source.config(), "init_args": {**source.config()["init_args"], "weights": str(ckpt)}})
    with torch.no_grad():
        torch.testing.assert_close(via_init.eval()(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["allcnn", "vit"])
def test_head_mismatch_is_explained(tmp_path, name: str) -> None:
    path = tmp_path / "w.pt"
    torch.save(_make(name, 3).state_dict(), path)
    config = _make(name, 3).config()
    config["init_args"]["num_classes"] = 7
    with pytest.raises(ValueError, match=r"checkpoint head has 5 outputs but the model has num_classes=7.*num_classes=5"):
        load_weights(build_backbone(config), path)


def test_checkpoint_of_another_backbone_is_rejected(tmp_path) -> None:
    path = tmp_path / "allcnn.pt"
    torch.save(_make("allcnn", 3).state_dict(), path)
    with pytest.raises(ValueError, match=r"(?s)missing keys.*unexpected keys.*block1.*another backbone"):
        load_weights(_make("vit", 3), path)
    wider = AllCNN(num_classes=NUM_CLASSES, image_size=SIZE, width=0.2)
    with pytest.raises(ValueError, match=r"mismatched shapes.*another backbone or another configuration"):
        load_weights(wider, path)


def test_missing_weights_file(tmp_path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_weights(_make("allcnn", 3), path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        AllCNN(weights=str(path))


def test_non_state_dict_file_is_rejected(tmp_path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_weights(_make("allcnn", 3), path)


# -- validation and building -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "too_small", "smallest"), [(ResNet18, 4, 8), (AllCNN, 2, 4)])
def test_image_too_small(cls: type[Backbone], too_small: int, smallest: int) -> None:
    assert cls.min_image_size == smallest
    with pytest.raises(ValueError, match=f"smallest it supports is {smallest}x{smallest}"):
        cls(image_size=too_small)
    model = cls(image_size=smallest, num_classes=3).eval()  # the stated minimum works
    assert model(torch.rand(1, 3, smallest, smallest)).shape == (1, 3)


def test_vit_patch_size_must_divide_image_size() -> None:
    with pytest.raises(ValueError, match="image_size divisible by patch_size.*image_size=30.*patch_size=4"):
        ViT(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        ViT(embed_dim=30, num_heads=4)


def test_other_argument_validation() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        AllCNN(num_classes=1)
    with pytest.raises(ValueError, match="mean has 2 values"):
        AllCNN(in_channels=3, mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="width"):
        AllCNN(width=0)


def test_build_backbone_names_and_errors() -> None:
    assert isinstance(build_backbone({"class_path": "AllCNN", "init_args": {"width": 0.05}}), AllCNN)
    assert isinstance(build_backbone({"class_path": "lightning_unlearn.backbones.AllCNN"}), AllCNN)
    with pytest.raises(ValueError, match="Unknown backbone 'Nope'.*ResNet18, AllCNN, ViT"):
        build_backbone({"class_path": "Nope"})
    with pytest.raises(ValueError, match="Unknown backbone 'torch.nn.Linear'.*nothing was imported"):
        build_backbone({"class_path": "torch.nn.Linear"})
    with pytest.raises(ValueError, match="Unknown backbone.*nothing was imported"):
        build_backbone({"class_path": "no_such_package.Model"})
    with pytest.raises(ValueError, match="class_path"):
        build_backbone({"init_args": {}})
    with pytest.raises(TypeError, match="depth"):
        build_backbone({"class_path": "AllCNN", "init_args": {"depth": 3}})


def test_factory_aliases() -> None:
    assert isinstance(resnet18(num_classes=3), ResNet18)
    assert isinstance(allcnn(width=0.05), AllCNN)
    model = vit(embed_dim=16, depth=1, num_heads=2)
    assert isinstance(model, ViT) and model.config()["init_args"]["depth"] == 1


# -- ViT: shifted patch tokens and locality self-attention ---------------------------------------------------------------
def test_vit_with_spt_and_lsa_is_wired_in() -> None:
    model = _make("vit_spt_lsa", 3)
    assert isinstance(model.vit.patch_embed, ShiftedPatchTokenization)
    assert model.vit.patch_embed.num_patches == (SIZE // 2) ** 2
    assert all(isinstance(block.attn, LocalitySelfAttention) for block in model.vit.blocks)
    assert model.vit.pos_embed.shape == (1, (SIZE // 2) ** 2 + 1, 32)
    plain = _make("vit", 3)
    assert not isinstance(plain.vit.patch_embed, ShiftedPatchTokenization)
    assert not any(isinstance(m, LocalitySelfAttention) for m in plain.modules())


def test_shifted_patch_tokenization() -> None:
    spt = ShiftedPatchTokenization(img_size=8, patch_size=4, in_chans=2, embed_dim=24)
    assert spt.grid_size == (2, 2) and spt.num_patches == 4 and spt.feat_ratio() == 4
    assert spt.proj.in_features == 5 * 2 * 4 * 4
    x = torch.rand(3, 2, 8, 8)
    shifted = spt.shift_cat(x)
    assert shifted.shape == (3, 10, 8, 8)
    torch.testing.assert_close(shifted[:, :2], x)
    s = 2  # half a patch
    torch.testing.assert_close(shifted[:, 2:4, s:, s:], x[:, :, :-s, :-s])  # first diagonal shift
    torch.testing.assert_close(shifted[:, 8:10, :-s, :-s], x[:, :, s:, s:])  # opposite diagonal
    assert torch.all(shifted[:, 2:4, :s] == 0)  # zero padding
    assert spt(x).shape == (3, 4, 24)
    nchw = ShiftedPatchTokenization(img_size=8, patch_size=4, in_chans=2, embed_dim=24, output_fmt="NCHW")
    nchw.load_state_dict(spt.state_dict())
    torch.testing.assert_close(nchw(x).flatten(2).transpose(1, 2), spt(x))


def test_spt_works_as_timm_embed_layer_with_dynamic_size() -> None:
    model = VisionTransformer(
        img_size=8, patch_size=2, embed_dim=16, depth=1, num_heads=2, num_classes=4,
        embed_layer=ShiftedPatchTokenization, dynamic_img_size=True,
    ).eval()
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 4)
    assert model(torch.rand(2, 3, 12, 12)).shape == (2, 4)


@pytest.mark.parametrize("fused", [True, False])
def test_lsa_masks_the_diagonal_and_learns_its_temperature(fused: bool) -> None:
    torch.manual_seed(0)
    attn = LocalitySelfAttention(dim=16, num_heads=2, qkv_bias=True)
    attn.fused_attn = fused
    assert isinstance(attn.scale, torch.nn.Parameter) and attn.scale.shape == (2,)
    torch.testing.assert_close(attn.scale.detach(), torch.full((2,), 8**-0.5))

    x = torch.randn(3, 5, 16)
    weights = attn.attention_weights(x)
    assert weights.shape == (3, 2, 5, 5)
    assert torch.all(torch.diagonal(weights, dim1=-2, dim2=-1) == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 5))

    # forward == attention_weights @ v, projected
    v = attn.qkv(x).reshape(3, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)[2]
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(3, 5, 16))
    out = attn(x)
    torch.testing.assert_close(out, expected)

    out.sum().backward()
    assert attn.scale.grad is not None and attn.scale.grad.abs().sum() > 0


# -- the user's architectures (issue 25) ------------------------------------------------------------------------------
def test_import_architecture_names_what_it_cannot_use(monkeypatch) -> None:
    from lightning_unlearn.backbones import import_architecture
    from lightning_unlearn.backbones.io import _REGISTERED

    monkeypatch.setattr("lightning_unlearn.backbones.io._REGISTERED", dict(_REGISTERED))
    with pytest.raises(ValueError, match="cannot import 'no_such_pkg'.*PYTHONPATH"):
        import_architecture("no_such_pkg.Net")
    with pytest.raises(ValueError, match="not a Backbone subclass, an nn.Module class or a function"):
        import_architecture("json.JSONDecoder")
    with pytest.raises(ValueError, match="not a built-in backbone"):
        import_architecture("Nope")
    assert import_architecture("AllCNN") is AllCNN  # built-ins: nothing imported
    assert import_architecture("torch.nn:Linear") is torch.nn.Linear  # a plain network class, now registered
    from lightning_unlearn.backbones.io import _lookup

    assert _lookup("torch.nn:Linear") is torch.nn.Linear


def test_a_factory_network_is_adapted_and_records_its_name(monkeypatch) -> None:
    from lightning_unlearn.backbones import AdaptedBackbone, register_backbone
    from lightning_unlearn.backbones.io import _REGISTERED

    monkeypatch.setattr("lightning_unlearn.backbones.io._REGISTERED", dict(_REGISTERED))

    def tiny(num_classes: int = 10, width: int = 4) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(1, width, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                   torch.nn.Linear(width, num_classes))

    register_backbone(tiny, name="tiny")
    config = {"class_path": "tiny", "init_args": {"num_classes": 3, "in_channels": 1, "image_size": 8, "width": 6}}
    net = build_backbone(config, untrusted=True)
    assert isinstance(net, AdaptedBackbone) and net.head.out_features == 3 and net.net[0].out_channels == 6
    assert net.config() == config and net(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(TypeError, match=r"cannot be called with .*depth.*--arch_args"):
        build_backbone({"class_path": "tiny", "init_args": {"num_classes": 3, "depth": 2}})


def test_fresh_network_draws_as_a_new_construction() -> None:
    from lightning_unlearn.backbones import AdaptedBackbone, fresh_network

    model = FACTORIES["allcnn"]()
    torch.manual_seed(7)
    expected = FACTORIES["allcnn"]()
    before = torch.random.get_rng_state()
    fresh = fresh_network(model, 7)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left as it was
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), expected.state_dict().values()))
    plain = AdaptedBackbone(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5)), in_channels=1,
                            image_size=8)
    plain.eval().requires_grad_(False)  # a frozen original (a method's reference copy)
    again = fresh_network(plain, 7)  # no exact config: a re-initialised copy
    assert again.training and all(p.requires_grad for p in again.parameters())  # trainable, as constructed
    assert type(again) is AdaptedBackbone and not torch.equal(again.head.weight, plain.head.weight)
    assert torch.equal(again.head.weight, fresh_network(plain, 7).head.weight)
