"""Inside the user's own Lightning project (issue 25): their module, network, DataModule and splits in; their module
back out; Lightning's habits; deletion requests that keep coming. ``user_project.py`` is the user's code.

Every failure the issue lists has a test here that fails on the code before it (c7d07c8).
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import user_project as up
from conftest import quiet_trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn

from lightning_unlearn.backbones import AdaptedBackbone, Backbone, NetworkProtocolError, check_network
from lightning_unlearn.checkpoints import load_backbone, read_checkpoint, save_checkpoint
from lightning_unlearn.cli import main
from lightning_unlearn.data import DatasetsDataModule, ForgetSpec
from lightning_unlearn.evaluation import UnlearningEvaluator
from lightning_unlearn.methods import (
    SCRUB,
    BadTeacher,
    BoundaryExpanding,
    BoundaryShrink,
    Classifier,
    Finetune,
    TwinUnlearning,
)
from lightning_unlearn.quiet import CLI_WARNINGS, METHOD_WARNINGS

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu",
         "--trainer.logger=false"]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's trained model: ``Trainer.fit`` of their module on their DataModule, the best epoch kept by
    ``ModelCheckpoint``, reloaded with ``load_from_checkpoint``."""
    root = tmp_path_factory.mktemp("user_project")
    pl.seed_everything(0, verbose=False)
    data = up.DigitsData()
    best = ModelCheckpoint(dirpath=root, monitor="val_acc", mode="max", filename="best")
    trainer = quiet_trainer(max_epochs=4, callbacks=[best], enable_checkpointing=True)
    trainer.fit(up.LitClassifier(), datamodule=data)
    lit = up.LitClassifier.load_from_checkpoint(best.best_model_path).eval()
    Path(best.best_model_path).chmod(0o444)
    return SimpleNamespace(lit=lit, ckpt=Path(best.best_model_path), data=data, root=root)


def unlearning_dm(user, forget: ForgetSpec | None = None, **kwargs) -> DatasetsDataModule:
    """The user's datasets (without the transform) as an unlearning DataModule, their validation split as holdout."""
    kwargs.setdefault("holdout_indices", user.data.val_indices)
    return DatasetsDataModule(
        up.DigitsImages(train=True), up.DigitsImages(train=False), image_size=up.IMAGE_SIZE, in_channels=1,
        mean=up.MEAN, std=up.STD, forget=forget or ForgetSpec(classes=[3]), batch_size=64, **kwargs,
    )


def adapted(user) -> AdaptedBackbone:
    return AdaptedBackbone(user.lit.net, image_size=up.IMAGE_SIZE, mean=up.MEAN, std=up.STD)


def outputs(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(x)


# -- the user's splits ------------------------------------------------------------------------------------------------
def test_the_users_validation_split_is_the_holdout(user):
    """The package drew its own holdout: most of its "non-members" were in the user's training set."""
    dm = unlearning_dm(user)
    holdout = set(dm.splits.holdout.tolist())
    assert holdout == set(user.data.val_indices)
    assert not holdout & set(user.data.train_indices)
    assert set(dm.splits.retain.tolist()) | set(dm.splits.forget.tolist()) == set(user.data.train_indices)
    assert dm.splits_info()["holdout"] == "given"


def test_adapted_user_network_is_accurate_on_the_unlearning_data(user, tmp_path):
    dm = unlearning_dm(user)
    evaluator = UnlearningEvaluator(mia=False, zrf=False, output_dir=str(tmp_path))
    quiet_trainer(callbacks=[evaluator]).test(Classifier(adapted(user)), datamodule=dm, verbose=False)
    assert evaluator.results["acc/test_retain"] > 0.9, evaluator.results["acc/test_retain"]


# -- silent wrong results ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [BoundaryShrink, Finetune, SCRUB], ids=["BS", "Finetune", "SCRUB"])
def test_methods_refuse_a_datamodule_without_splits(user, make):
    """``fit(method, datamodule=<the user's own DataModule>)`` trained on all ten classes (SCRUB: an AttributeError)."""
    method = make(adapted(user))
    before = copy.deepcopy(method.model.state_dict())
    with pytest.raises(TypeError, match="needs the forget and retain splits, but fit was given DigitsData"):
        quiet_trainer(max_epochs=1).fit(method, datamodule=up.DigitsData())
    after = method.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_normalised_images_are_refused(user):
    """Images normalised by the dataset's transform were normalised again by the network (x in [-0.96, 2.18])."""
    dm = DatasetsDataModule(
        up.DigitsImages(train=True, transform=up.transform()), up.DigitsImages(train=False, transform=up.transform()),
        image_size=16, in_channels=1, mean=up.MEAN, std=up.STD, forget=ForgetSpec(classes=[3]),
    )
    with pytest.raises(ValueError, match=r"not \[0, 1\].*without Normalize"):
        quiet_trainer(max_epochs=1).fit(Finetune(adapted(user)), datamodule=dm)

    class Normalising(up.DigitsForUnlearning):  # a DataModule of the user's serving normalised tensors itself
        def load_datasets(self):  # noqa: ANN202
            return tuple(_Normalised(d) for d in super().load_datasets())

    with pytest.raises(ValueError, match=r"values in \[-0\.9\d, \d\.\d\d\], not \[0, 1\].*Remove Normalize"):
        dm = Normalising(image_size=16, forget=ForgetSpec(classes=[3]))
        quiet_trainer(max_epochs=1).fit(Finetune(adapted(user)), datamodule=dm)


class _Normalised(torch.utils.data.Dataset):
    def __init__(self, base) -> None:  # noqa: ANN001
        self.base, self.targets = base, base.targets

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):  # noqa: ANN204
        x, y, index = self.base[i]
        return (x - up.MEAN[0]) / up.STD[0], y, index


def test_an_image_size_the_network_does_not_take_is_refused(user, tmp_path):
    """The recipe's DataModule serves 32 px by default: a 16-px model was evaluated at 0.217 instead of 0.947."""
    dm = up.DigitsForUnlearning(forget=ForgetSpec(classes=[3]))  # image_size left out: 32
    match = r"takes image_size=16 but the DataModule \(DigitsForUnlearning\) serves image_size=32 \(the Unlearn"
    with pytest.raises(ValueError, match=match):
        quiet_trainer(max_epochs=1).fit(Finetune(adapted(user)), datamodule=dm)
    evaluator = UnlearningEvaluator(mia=False, zrf=False, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=match):
        quiet_trainer(callbacks=[evaluator]).test(Classifier(adapted(user)), datamodule=dm)


def test_a_model_at_chance_is_reported(user, tmp_path):
    """An untrained network (or the plain network where the adapted one was meant) was evaluated at 0.109 silently."""
    untrained = AdaptedBackbone(up.SmallCNN(), image_size=16, mean=up.MEAN, std=up.STD)
    dm = unlearning_dm(user)
    with pytest.warns(UserWarning, match=r"The gold model is at chance on the retained data \(\d+\.\d%, chance 10\.0%"):
        evaluator = UnlearningEvaluator(gold=untrained, mia=False, zrf=False, output_dir=str(tmp_path))
        quiet_trainer(callbacks=[evaluator]).test(Classifier(adapted(user)), datamodule=dm, verbose=False)
    with pytest.warns(UserWarning, match="starts from .* is at chance on the retained data"):
        quiet_trainer(max_epochs=1, limit_train_batches=1).fit(Finetune(copy.deepcopy(untrained)), datamodule=dm)


# -- their architecture in --------------------------------------------------------------------------------------------
class Wrapped(nn.Module):
    """A duck-typed wrapper of the user's network: the protocol's members and nothing else (no ``num_classes``,
    ``config()``, normalisation buffers of a Backbone)."""

    def __init__(self, net: up.SmallCNN) -> None:
        super().__init__()
        self.body, self.head = net.body, net.fc
        self.in_channels, self.image_size = 1, up.IMAGE_SIZE

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - up.MEAN[0]) / up.STD[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_the_protocol_check_names_what_is_missing(user):
    missing = r"no `features\(x\)`.*no `head`.*no integer `in_channels` / `image_size`"
    with pytest.raises(NetworkProtocolError, match=missing):
        check_network(user.lit.net)
    with pytest.raises(NetworkProtocolError, match=r"Finetune \(SmallCNN\) cannot be unlearned from"):
        Finetune(user.lit.net)
    assert check_network(Wrapped(up.SmallCNN())) is not None


@pytest.fixture(scope="module")
def recorded_wrapper(user, tmp_path_factory):
    """The wrapper around a copy of the user's network, with the Amnesiac updates of two further training steps."""
    from lightning_unlearn.methods import AmnesiacRecorder

    path = tmp_path_factory.mktemp("amnesiac") / "updates.pt"
    model = Classifier(Wrapped(copy.deepcopy(user.lit.net)).train(), lr=0.01, scheduler="none")
    recorder = AmnesiacRecorder(path=str(path))
    quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, callbacks=[recorder]).fit(
        model, datamodule=unlearning_dm(user)
    )
    return model.model, path


FAST_TMU = dict(twin_epochs=1, twin_retain_fraction=0.1, cf_epochs=1, cf_fraction=0.2, classifier_epochs=5,
                retain_fraction=0.1, af_steps=2)
METHODS = {
    "Amnesiac": lambda net, updates: __import__("lightning_unlearn.methods", fromlist=["x"]).Amnesiac(
        net, updates=str(updates)),
    "AmnesiacRelabel": lambda net, _: __import__("lightning_unlearn.methods", fromlist=["x"]).AmnesiacRelabel(net),
    "BadTeacher": lambda net, _: BadTeacher(net),
    "BoundaryExpanding": lambda net, _: __import__("lightning_unlearn.methods", fromlist=["x"]).BoundaryExpanding(net),
    "BoundaryShrink": lambda net, _: BoundaryShrink(net),
    "Finetune": lambda net, _: Finetune(net),
    "FisherForgetting": lambda net, _: __import__("lightning_unlearn.methods", fromlist=["x"]).FisherForgetting(net),
    "L1Sparse": lambda net, _: __import__("lightning_unlearn.methods", fromlist=["x"]).L1Sparse(net),
    "NegativeGradient": lambda net, _: __import__("lightning_unlearn.methods", fromlist=["x"]).NegativeGradient(net),
    "RandomLabels": lambda net, _: __import__("lightning_unlearn.methods", fromlist=["x"]).RandomLabels(net),
    "SCRUB": lambda net, _: SCRUB(net),
    "SalUn": lambda net, _: __import__("lightning_unlearn.methods", fromlist=["x"]).SalUn(net),
    "SelectiveSynapticDampening": lambda net, _: __import__(
        "lightning_unlearn.methods", fromlist=["x"]).SelectiveSynapticDampening(net),
    "TwinUnlearning": lambda net, _: TwinUnlearning(net, **FAST_TMU),
    "UNSIR": lambda net, _: __import__("lightning_unlearn.methods", fromlist=["x"]).UNSIR(
        net, noise_steps=2, retain_per_class=20),
    "ConvolutionTranspose": lambda net, _: __import__("lightning_unlearn.methods", fromlist=["x"]).ConvolutionTranspose(
        net),
    "LabelFreeSSD": lambda net, _: __import__("lightning_unlearn.methods", fromlist=["x"]).LabelFreeSSD(net),
    "MaskedSmallGradients": lambda net, _: __import__("lightning_unlearn.methods", fromlist=["x"]).MaskedSmallGradients(
        net),
    "RUM": lambda net, _: __import__("lightning_unlearn.methods", fromlist=["x"]).RUM(net),
    "SFRon": lambda net, _: __import__("lightning_unlearn.methods", fromlist=["x"]).SFRon(net),
}


def test_every_method_is_listed():
    import lightning_unlearn.methods as methods

    names = {n for n in methods.__all__ if isinstance(getattr(methods, n), type)
             and issubclass(getattr(methods, n), methods.UnlearningMethod) and n != "UnlearningMethod"}
    assert names == set(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_duck_typed_wrapper_works_in_every_method(user, recorded_wrapper, name):
    """Six of the fifteen methods failed on a wrapper with `features` and `head` (`num_classes`, `config`, ...)."""
    trained, updates = recorded_wrapper
    net = copy.deepcopy(trained)
    method = METHODS[name](net, updates)
    method.retain_collapse = None  # two steps of a method's first epoch: about running, not about quality
    limit = {} if not method.uses_optimizer else {"limit_train_batches": 2}  # Fisher, SSD: one pass over all data
    quiet_trainer(max_epochs=1, **limit).fit(method, datamodule=unlearning_dm(user))
    out = method.unlearned_backbone()
    assert out.head.out_features == 10 and all(torch.isfinite(p).all() for p in out.parameters())


def test_adapted_backbone_never_changes_the_users_module(user, tmp_path):
    """`AdaptedBackbone` replaced `lit.net.fc` by Identity (`lit(x)` returned features), failed in BadTeacher and TMU
    and in `save_checkpoint` ("did not call _record_config")."""
    x = torch.rand(4, 1, 16, 16)
    before = outputs(user.lit, x)
    backbone = adapted(user)
    assert isinstance(user.lit.net.fc, nn.Linear) and torch.equal(outputs(user.lit, x), before)
    for method in (BadTeacher(backbone), TwinUnlearning(backbone, **FAST_TMU)):
        method.retain_collapse = None
        quiet_trainer(max_epochs=1, limit_train_batches=2).fit(method, datamodule=unlearning_dm(user))
    assert torch.equal(outputs(user.lit, x), before) and isinstance(user.lit.net.fc, nn.Linear)
    assert backbone.config()["class_path"] == "user_project.SmallCNN"
    save_checkpoint(tmp_path / "adapted.ckpt", backbone, {"version": 1, "role": "original", "splits": None})
    from lightning_unlearn.backbones import register_backbone
    from lightning_unlearn.backbones.io import _REGISTERED

    with pytest.raises(ValueError, match=r"Unknown backbone 'user_project.SmallCNN'.*--arch user_project.SmallCNN"):
        load_backbone(tmp_path / "adapted.ckpt")  # a file names the class: refused unless registered or named
    register_backbone(up.SmallCNN)
    try:
        rebuilt, _ = load_backbone(tmp_path / "adapted.ckpt")
    finally:
        for key in [k for k, v in _REGISTERED.items() if v is up.SmallCNN]:
            del _REGISTERED[key]
    assert torch.equal(outputs(rebuilt, x), outputs(backbone, x))


def test_a_registered_backbone_subclass_needs_no_record_config(tmp_path):
    """A subclass had to call the private `_record_config`, else `config()` (and every checkpoint) failed."""
    from lightning_unlearn.backbones import register_backbone
    from lightning_unlearn.backbones.io import _REGISTERED

    class Mine(Backbone):
        def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 16, width: int = 8,
                     mean: list[float] | None = None, std: list[float] | None = None) -> None:
            super().__init__(num_classes, in_channels, image_size, mean, std)
            self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
            self.head = nn.Linear(width, num_classes)

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean((2, 3))

    net = Mine(width=5, mean=[0.5], std=[0.25])
    assert net.config()["init_args"] == {"num_classes": 10, "in_channels": 1, "image_size": 16, "width": 5,
                                         "mean": [0.5], "std": [0.25]}
    register_backbone(Mine)
    try:
        save_checkpoint(tmp_path / "mine.ckpt", net, {"version": 1, "role": "original", "splits": None})
        rebuilt, _ = load_backbone(tmp_path / "mine.ckpt")
    finally:
        for key in [k for k, v in _REGISTERED.items() if v is Mine]:
            del _REGISTERED[key]
    assert type(rebuilt) is Mine and rebuilt.conv.out_channels == 5


# -- their module back out --------------------------------------------------------------------------------------------
def test_the_unlearned_network_goes_back_into_the_users_module(user):
    """The keys were `model.net.*`/`model.head.*`: the user mapped them back by hand."""
    method = Finetune(adapted(user))
    quiet_trainer(max_epochs=1, limit_train_batches=3).fit(method, datamodule=unlearning_dm(user))
    unlearned = method.unlearned_backbone()
    lit = up.LitClassifier()
    lit.load_state_dict(unlearned.to_native_state_dict("net."))  # strict: every key of the user's module
    x = torch.rand(6, 1, 16, 16)
    assert torch.allclose(outputs(lit, (x - up.MEAN[0]) / up.STD[0]), outputs(unlearned, x), atol=1e-5)
    assert not torch.allclose(outputs(lit, x), outputs(user.lit, x))  # the unlearned weights, not the original's


def test_boundary_expanding_head_only_keeps_the_users_body(user):
    """Boundary Expanding with ``train_layers="head"`` on the user's network (BatchNorm in its body): back in their
    module, every weight and running statistic of the body is theirs bit for bit, only ``fc`` changed, and class 3 is
    forgotten."""
    method = BoundaryExpanding(adapted(user), train_layers="head", lr=1e-2, stop_at_forget_acc=0.05)
    dm = unlearning_dm(user)
    quiet_trainer(max_epochs=30).fit(method, datamodule=dm)
    unlearned = method.unlearned_backbone()
    native = unlearned.to_native_state_dict("net.")
    for key, value in user.lit.state_dict().items():
        assert torch.equal(native[key], value) != key.startswith("net.fc."), key
    lit = up.LitClassifier()
    lit.load_state_dict(native)  # strict: their module takes it back
    assert method.stopped_epoch is not None and method.accuracy_on("forget") <= 0.05


def test_cli_unlearns_the_users_checkpoint_by_their_class_and_exports_it_back(user, tmp_path):
    """`--arch user_project.SmallCNN` was refused ("Unknown backbone"); `LitClassifier.load_from_checkpoint` of the
    result failed (`KeyError: 'pytorch-lightning_version'`)."""
    holdout = tmp_path / "val.json"
    holdout.write_text(json.dumps(user.data.val_indices))
    out = tmp_path / "r1" / "unlearned.ckpt"
    main(["unlearn", "--data", "user_project.DigitsForUnlearning", "--data.image_size", "16",
          "--data.holdout_indices", str(holdout), "--data.forget.classes", "[3]", "--model", "Finetune",
          "--original_ckpt", str(user.ckpt), "--arch", "user_project.SmallCNN", "--export", "native",
          "--output", str(out), "--trainer.max_epochs", "1", "--evaluate", "false",
          f"--trainer.default_root_dir={tmp_path}", *QUIET])
    native = out.with_name("unlearned.native.ckpt")
    lit = up.LitClassifier.load_from_checkpoint(native)
    unlearned, meta = load_backbone(out)
    x = torch.rand(6, 1, 16, 16)
    assert torch.allclose(outputs(lit, (x - up.MEAN[0]) / up.STD[0]), outputs(unlearned, x), atol=1e-5)
    assert meta["backbone"]["class_path"] == "user_project.SmallCNN"
    assert meta["native_source"]["format"] == "lightning" and meta["native_source"]["network_attr"] == "net"
    assert read_checkpoint(native)["hyper_parameters"] == dict(user.lit.hparams)
    assert [e["method"] for e in meta["ledger"]] == ["Finetune"]


def test_a_grey_stem_resnet18_is_named_by_the_users_factory(tmp_path):
    """`--arch torchvision:resnet18` cannot hold a grey 3x3 stem (`net.conv1.weight: (64, 1, 3, 3) vs (64, 3, 7, 7)`):
    the user's own factory can."""
    lit = up.LitClassifier(arch="resnet18")
    ckpt = tmp_path / "resnet.ckpt"
    torch.save({"state_dict": lit.state_dict(), "pytorch-lightning_version": pl.__version__,
                "hyper_parameters": dict(lit.hparams)}, ckpt)
    out = tmp_path / "out" / "unlearned.ckpt"
    main(["unlearn", "--data", "user_project.DigitsForUnlearning", "--data.image_size", "16",
          "--data.forget.classes", "[3]", "--model", "Finetune", "--original_ckpt", str(ckpt),
          "--arch", "user_project:grey_resnet18", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
          "--retain_collapse", "null", "--evaluate", "false", "--output", str(out),
          f"--trainer.default_root_dir={tmp_path}", *QUIET])
    unlearned, meta = load_backbone(out)
    assert meta["backbone"]["class_path"] == "user_project:grey_resnet18"
    assert tuple(unlearned.net.conv1.weight.shape) == (64, 1, 3, 3)


# -- Lightning habits -------------------------------------------------------------------------------------------------
def test_methods_behave_like_lightning_modules(user, tmp_path):
    """`trainer.test(method)`: "No test_step() method defined"; `predict`: TypeError; `EarlyStopping(monitor=
    "train/loss")` found no metric; the evaluator's results were not in `callback_metrics`; the package's batches
    broke the user's `test_step` (too many values to unpack); Python runs printed the notices the CLI hides."""
    dm = unlearning_dm(user)
    method = Finetune(adapted(user))
    stop = EarlyStopping(monitor="train/loss", patience=5)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="train/loss", mode="min")
    evaluator = UnlearningEvaluator(mia=False, zrf=False, output_dir=str(tmp_path / "eval"))
    trainer = quiet_trainer(max_epochs=2, callbacks=[stop, best, evaluator], enable_checkpointing=True,
                            log_every_n_steps=50)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.fit(method, datamodule=dm)
    notices = (*METHOD_WARNINGS.values(), *CLI_WARNINGS)
    assert not [str(w.message) for w in seen if any(re.search(n, str(w.message)) for n in notices)]
    epoch_loss = float(trainer.callback_metrics["train/loss"])
    assert best.best_model_path and float(best.best_model_score) <= epoch_loss + 1e-6  # the best epoch's mean loss
    assert float(trainer.callback_metrics["acc/forget"]) == pytest.approx(evaluator.results["acc/forget"], abs=1e-6)
    with warnings.catch_warnings(record=True) as after:  # the notices are dropped for that run only
        warnings.simplefilter("always")
        warnings.warn("You passed in a `val_dataloader` but have no `validation_step`. Skipping val loop.",
                      stacklevel=1)
    assert len(after) == 1

    (tested,) = quiet_trainer().test(method, datamodule=dm, verbose=False)
    assert tested["test/acc"] == pytest.approx(evaluator.results["acc/test"], abs=1e-6)
    predicted = torch.cat(quiet_trainer().predict(method, datamodule=dm))
    assert predicted.shape == (len(dm.splits.test), 10)
    (theirs,) = quiet_trainer().test(user.lit, datamodule=dm, verbose=False)  # their own test_step: x, y = batch
    assert "test_acc" in theirs


def test_the_epoch_loss_is_the_mean_of_the_steps(user):
    """A step's loss reaches `self.log` on logging steps only (issue 17); the epoch mean is summed on the device."""
    seen: list[float] = []

    class Spy(Finetune):
        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            loss = super().training_step(batch, batch_idx)
            seen.append((float(loss.detach()), len(batch[1])))
            return loss

    trainer = quiet_trainer(max_epochs=1, log_every_n_steps=1000)
    trainer.fit(Spy(adapted(user)), datamodule=unlearning_dm(user))
    mean = sum(v * n for v, n in seen) / sum(n for _, n in seen)
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(mean, rel=1e-5)


def test_an_unlearn_trainer_is_built_without_the_cloud_tips(caplog):
    from lightning_unlearn.trainer import UnlearnTrainer

    with caplog.at_level("INFO"):
        UnlearnTrainer(logger=False, accelerator="cpu", enable_progress_bar=False)
    assert not [r for r in caplog.records if r.getMessage().startswith("💡 Tip:")]


# -- deletion requests that keep coming -------------------------------------------------------------------------------
def test_three_deletion_requests_from_the_cli(tmp_path, monkeypatch):
    """A second request on an unlearned checkpoint was refused (`SplitMismatchError`). Now each request forgets among
    what is left, keeps the holdout, extends the ledger; the gold model of request 2 is retrained without requests 1
    and 2 (`--data.previous_ckpt`), and a BYO gold model can state its training time."""
    from lightning_unlearn.data import DigitsDataModule
    from lightning_unlearn.data.forget import index_hash

    (tmp_path / "configs").symlink_to(Path(__file__).resolve().parents[1] / "configs")
    monkeypatch.chdir(tmp_path)
    data = ["--data", "configs/data/digits.yaml"]
    fast = ["--trainer.max_epochs", "1", *QUIET]
    model = ["-c", "configs/model/allcnn.yaml", "--model.backbone.init_args.width", "0.25"]
    main(["fit", "-c", "configs/data/digits.yaml", *model, "--trainer.max_epochs", "3",
          "--trainer.default_root_dir", "runs/o", *QUIET])
    main(["unlearn", *data, "--model", "Finetune", "--original_ckpt", "runs/o/original.ckpt", "--evaluate", "false",
          "--output", "runs/r1/unlearned.ckpt", "--trainer.default_root_dir", "runs/r1", *fast])
    retain1 = DigitsDataModule(forget=ForgetSpec(classes=[3]), image_size=16).splits.retain
    picked = retain1[np.linspace(0, len(retain1) - 1, 100).astype(int)]
    Path("request2.json").write_text(json.dumps(picked.tolist()))
    request2 = ["--data.forget.indices_file", "request2.json"]
    main(["fit", "-c", "configs/data/digits.yaml", *model, *request2,
          "--data.previous_ckpt", "runs/r1/unlearned.ckpt", "--data.train_on", "retain",
          "--trainer.default_root_dir", "runs/g2", *fast])
    main(["unlearn", *data, *request2, "--model", "NegativeGradient", "--original_ckpt", "runs/r1/unlearned.ckpt",
          "--gold_ckpt", "runs/g2/gold.ckpt", "--output", "runs/r2/unlearned.ckpt",
          "--trainer.default_root_dir", "runs/r2", "--retain_collapse", "null", *fast])
    main(["unlearn", *data, "--data.forget.fraction", "0.03", "--model", "Finetune",
          "--original_ckpt", "runs/r2/unlearned.ckpt", "--evaluate", "false", "--output", "runs/r3/unlearned.ckpt",
          "--trainer.default_root_dir", "runs/r3", "--export", "native", *fast])
    native = torch.load("runs/r3/unlearned.native.pt", weights_only=True)  # a model of this package: its state_dict
    assert all(torch.equal(native[k], v) for k, v in load_backbone("runs/r3/unlearned.ckpt")[0].state_dict().items())

    meta = read_checkpoint("runs/r3/unlearned.ckpt")["lightning_unlearn"]
    ledger = meta["ledger"]
    assert [(e["request"], e["method"]) for e in ledger] == [(1, "Finetune"), (2, "NegativeGradient"), (3, "Finetune")]
    assert [e["forget_spec"] for e in ledger][:2] == [{"classes": [3]}, {"indices_file": "request2.json"}]
    assert ledger[1]["forget_indices"] == sorted(picked.tolist()) and all(e["time"] for e in ledger)
    sets = [set(e["forget_indices"]) for e in ledger]
    assert not sets[0] & sets[1] and not sets[2] & (sets[0] | sets[1])  # each request forgot among what was left
    sizes = meta["splits"]["sizes"]
    assert sizes["forgotten"] == len(sets[0] | sets[1]) and sizes["forget"] == len(sets[2])
    first = read_checkpoint("runs/r1/unlearned.ckpt")["lightning_unlearn"]["splits"]
    assert meta["splits"]["holdout_indices"] == first["holdout_indices"]  # the non-members never change
    gold = read_checkpoint("runs/g2/gold.ckpt")["lightning_unlearn"]["splits"]
    assert gold["hashes"]["forgotten"] == index_hash(np.array(sorted(sets[0]))) and gold["sizes"]["retain"] == len(
        retain1) - 100
    summary = json.loads(Path("runs/r2/unlearn.json").read_text())
    assert summary["request"] == 2 and summary["metrics"]["gold/forget_acc_gap"] is not None
    # the same request again has nothing left to forget: one line, nothing written
    nothing_left = r"selects no training sample \(every sample it names was forgotten by an earlier request\)"
    with pytest.raises(ValueError, match=nothing_left):
        main(["unlearn", *data, "--model", "Finetune", "--original_ckpt", "runs/r1/unlearned.ckpt",
              "--output", "runs/again/unlearned.ckpt", *fast])
    assert not Path("runs/again").exists()


# -- the worked example of docs/embedding.md, as written --------------------------------------------------------------
def embedding_example() -> str:
    text = (Path(__file__).resolve().parents[1] / "docs" / "embedding.md").read_text()
    body = text[text.index("## Your Lightning project") :]
    return body[body.index("```python\n") + len("```python\n") : body.index("\n```\n")]


def test_the_embedding_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "embedding_example"}
    exec(compile(embedding_example(), "docs/embedding.md", "exec"), namespace)  # noqa: S102 - our own docs
    results = namespace["evaluator"].results
    assert results["acc/forget"] < 0.2 and results["acc/test_retain"] > 0.8, results
    assert isinstance(namespace["lit"].net.fc, nn.Linear)  # the user's module is as it was
    assert (tmp_path / "runs" / "boundary_shrink" / "metrics.json").is_file()
    x = torch.rand(4, 1, 16, 16)
    back = outputs(namespace["unlearned"], (x - up.MEAN[0]) / up.STD[0])
    assert torch.allclose(back, outputs(namespace["method"].unlearned_backbone(), x), atol=1e-5)
