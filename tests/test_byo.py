"""Bring your own model and data: Lightning checkpoints of a user's module, plain state_dicts of named architectures
(ours, torchvision, timm), a torchvision-style dataset, and the one-line refusals of what cannot be used."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn

from lightning_unlearn.backbones import NoClassifierHeadError, TimmBackbone, TorchvisionBackbone
from lightning_unlearn.backbones.adapters import AdaptedBackbone
from lightning_unlearn.byo import ModelSource, load_model
from lightning_unlearn.checkpoints import CheckpointError, read_checkpoint
from lightning_unlearn.cli import main
from lightning_unlearn.data import ForgetSpec, IndexedDataset, UnlearningDataModule

from conftest import digits_dm, small_allcnn

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu",
         "--trainer.logger=false"]


class UserModule(pl.LightningModule):
    """A user's own LightningModule: the network under ``self.net``, plus a loss module with no weights."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.criterion = nn.CrossEntropyLoss()


@pytest.fixture(scope="module")
def dm():
    d = digits_dm()
    d.setup()
    return d


def _same_outputs(a: nn.Module, b: nn.Module, dm) -> bool:
    x = torch.stack([dm.train_set[i][0] for i in range(8)])
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)


def test_lightning_checkpoint_of_a_user_module_finds_the_network(dm, tmp_path):
    net = small_allcnn(dm)
    path = tmp_path / "user.ckpt"
    torch.save({"state_dict": UserModule(net).state_dict(), "epoch": 3, "hyper_parameters": {}}, path)
    backbone, meta = load_model(path, dm, ModelSource("AllCNN", {"width": 0.25}))
    assert meta["source"]["network_attr"] == "net" and meta["source"]["format"] == "lightning"
    assert meta["splits"] is None and _same_outputs(backbone, net, dm)
    given, _ = load_model(path, dm, ModelSource("AllCNN", {"width": 0.25}, network_attr="net"))
    assert _same_outputs(given, net, dm)


def test_plain_state_dict_of_our_architecture(dm, tmp_path):
    net = small_allcnn(dm)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    backbone, meta = load_model(tmp_path / "w.pt", dm, ModelSource("AllCNN", {"width": 0.25}))
    assert meta["source"]["format"] == "state_dict" and _same_outputs(backbone, net, dm)


@pytest.mark.parametrize("family", ["torchvision", "timm"])
def test_torchvision_and_timm_state_dicts_through_the_adapter(dm, tmp_path, family):
    if family == "torchvision":
        import torchvision

        net = torchvision.models.get_model("resnet18", weights=None, num_classes=10)
        arch, head = "torchvision:resnet18", "fc"
    else:
        import timm

        net = timm.create_model("resnet10t", pretrained=False, num_classes=10, in_chans=1)
        arch, head = "timm:resnet10t", "fc"
    torch.save(net.state_dict(), tmp_path / "w.pt")
    backbone, meta = load_model(tmp_path / "w.pt", dm, ModelSource(arch))
    assert isinstance(backbone, TorchvisionBackbone if family == "torchvision" else TimmBackbone)
    assert backbone.head_name == head and isinstance(backbone.head, nn.Linear)
    x = torch.stack([dm.train_set[i][0] for i in range(4)])
    xn = backbone.normalize(x)
    with torch.no_grad():
        expected = net.eval()(xn.expand(-1, 3, -1, -1) if family == "torchvision" else xn)
        assert torch.allclose(backbone(x), expected, atol=1e-5)
        assert torch.allclose(backbone.head(backbone.features(x)), backbone(x))
    assert meta["backbone"]["init_args"]["arch"] == arch.split(":")[1]


def test_weights_that_do_not_fit_the_named_architecture_are_refused(dm, tmp_path):
    torch.save(small_allcnn(dm, width=0.25).state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"do not fit AllCNN .*pass the architecture they were trained with"):
        load_model(tmp_path / "w.pt", dm, ModelSource("AllCNN", {"width": 0.5}))
    with pytest.raises(CheckpointError, match="its architecture is not recorded: name it with --arch"):
        load_model(tmp_path / "w.pt", dm)
    wrong_classes = small_allcnn(digits_dm(), width=0.25)
    wrong_classes.head = nn.Linear(wrong_classes.head.in_features, 7)
    torch.save(wrong_classes.state_dict(), tmp_path / "w7.pt")
    with pytest.raises(CheckpointError, match="head .* has 7 outputs but the DataModule has 10 classes"):
        load_model(tmp_path / "w7.pt", dm, ModelSource("AllCNN", {"width": 0.25}))


def test_adapter_for_a_model_with_no_classifier_head(dm):
    trunk = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(NoClassifierHeadError, match="no nn.Linear layer at all"):
        AdaptedBackbone(trunk, num_classes=10, in_channels=1)
    odd = nn.ModuleDict({"trunk": nn.Conv2d(1, 4, 3), "out": nn.Linear(4, 10)})  # no known name, not a Sequential
    with pytest.raises(NoClassifierHeadError, match=r"its nn.Linear layers are: out. Pass `head=NAME`"):
        AdaptedBackbone(odd, num_classes=10, in_channels=1)
    conv_head = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Linear(4, 10))
    with pytest.raises(NoClassifierHeadError, match="is a Conv2d, not an nn.Linear"):
        AdaptedBackbone(conv_head, num_classes=10, in_channels=1, head="0")
    named = AdaptedBackbone(nn.Sequential(nn.Flatten(), nn.Linear(256, 10)), num_classes=10, in_channels=1, image_size=16,
                            head="1")
    assert named.features(torch.rand(2, 1, 16, 16)).shape == (2, 256)
    found = AdaptedBackbone(nn.Sequential(nn.Flatten(), nn.Linear(256, 10)), in_channels=1, image_size=16)
    assert found.head_name == "1"  # a plain Sequential classifier: its last layer is the head


def _unlearn(ckpt: Path, out: Path, *extra: str, evaluate: bool = False) -> list[str]:
    return ["unlearn", "-c", str(CONFIGS / "data/digits.yaml"), "--model", "Finetune", "--original_ckpt", str(ckpt),
            "--output", str(out / "unlearned.ckpt"), "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            "--evaluate", str(evaluate).lower(), f"--trainer.default_root_dir={out}", *QUIET, *extra]


def test_unlearn_a_users_lightning_checkpoint_records_the_stated_forget_set(dm, tmp_path):
    path = tmp_path / "user.ckpt"
    torch.save({"state_dict": UserModule(small_allcnn(dm)).state_dict()}, path)
    out = tmp_path / "run"
    gold = tmp_path / "gold.pt"  # a plain state_dict as the gold model too: given to the evaluator as a module
    torch.save(small_allcnn(dm).state_dict(), gold)
    main(_unlearn(path, out, "--arch", "AllCNN", "--arch_args", '{"width": 0.25}', "--data.forget.classes", "[5]",
                  "--gold_ckpt", str(gold), evaluate=True))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["original/acc/forget"] is not None and metrics["gold/forget_acc_gap"] is not None
    summary = json.loads((out / "unlearn.json").read_text())
    assert summary["original_source"]["network_attr"] == "net" and summary["original_source"]["arch"] == "AllCNN"
    assert "stated" in summary["forget_set"] and summary["splits"]["forget_spec"]["classes"] == [5]
    meta = read_checkpoint(out / "unlearned.ckpt")["lightning_unlearn"]
    assert meta["splits"]["hashes"] and meta["original_source"]["sha256"]
    reloaded, _ = load_model(out / "unlearned.ckpt", digits_dm(forget=ForgetSpec(classes=[5])))
    assert reloaded.num_classes == 10  # the unlearned model is ours: its splits are checked from now on


def test_a_gold_model_brought_along_states_its_training_time(dm, tmp_path):
    """A file that records no training time left the speed-up empty, with no way to state it (issue 25)."""
    path = tmp_path / "user.ckpt"
    torch.save({"state_dict": UserModule(small_allcnn(dm)).state_dict()}, path)
    torch.save(small_allcnn(dm).state_dict(), tmp_path / "gold.pt")
    out = tmp_path / "run"
    main(_unlearn(path, out, "--arch", "AllCNN", "--arch_args", '{"width": 0.25}', "--gold_ckpt",
                  str(tmp_path / "gold.pt"), "--gold_train_time_s", "12.5", "--retain_collapse", "null",
                  evaluate=True))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["time/retrain_s"] == 12.5 and metrics["time/speedup_vs_retrain"] > 0
    assert json.loads((out / "unlearn.json").read_text())["gold_train_time_s"] == 12.5


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "name it with --arch"),
        (["--arch", "AllCNN"], "do not fit AllCNN"),
        (["--arch", "AllCNN", "--arch_args", '{"width": 0.25}', "--data.forget", "null"], "state it on the data"),
    ],
)
def test_bad_input_one_line_and_nothing_written(dm, tmp_path, capsys, args, message):
    path = tmp_path / "user.ckpt"
    torch.save({"state_dict": UserModule(small_allcnn(dm)).state_dict()}, path)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(_unlearn(path, out, *args), friendly=True)
    assert exit_info.value.code == 1  # found once the subcommand runs
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lightning_unlearn")]
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists()


class TinyFake(torch.utils.data.Dataset):
    """A torchvision-style dataset: PIL-like HWC uint8 arrays and a ``targets`` list."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.data = rng.integers(0, 256, size=(n, 12, 12, 3), dtype=np.uint8)
        self.targets = [i % 4 for i in range(n)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.data[i], self.targets[i]


class TinyFakeDataModule(UnlearningDataModule):
    """The docs/data.md recipe, verbatim but for the dataset class."""

    name = "tiny_fake"
    num_classes = 4
    in_channels = 1
    mean = (0.5,)
    std = (0.25,)

    def load_datasets(self):
        return (IndexedDataset(TinyFake(80, 0), self.image_size, self.in_channels),
                IndexedDataset(TinyFake(40, 1), self.image_size, self.in_channels))


def test_torchvision_style_dataset_recipe():
    dm = TinyFakeDataModule(forget=ForgetSpec(classes=[2]), image_size=8, batch_size=16)
    dm.setup()
    x, y, i = dm.dataset("forget")[0]
    assert x.shape == (1, 8, 8) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and y == 2
    assert set(dm.splits.forget) == {j for j in range(80) if j % 4 == 2} - set(dm.splits.holdout)
    batch = next(iter(dm.loader("retain")))
    assert batch[0].shape[1:] == (1, 8, 8) and 2 not in batch[1].tolist()
    with pytest.raises(TypeError, match="no `targets` attribute"):
        IndexedDataset([(x, 0)], 8, 1)


def test_test_subcommand_reads_a_state_dict_and_a_foreign_gold(dm, tmp_path):
    torch.save(small_allcnn(dm).state_dict(), tmp_path / "model.pt")
    torch.save({"state_dict": UserModule(small_allcnn(dm)).state_dict()}, tmp_path / "gold.ckpt")
    root = tmp_path / "test"
    main(["test", "-c", str(CONFIGS / "data/digits.yaml"), "--ckpt_path", str(tmp_path / "model.pt"), "--gold_ckpt",
          str(tmp_path / "gold.ckpt"), "--arch", "AllCNN", "--arch_args", '{"width": 0.25}',
          f"--trainer.default_root_dir={root}", *QUIET])
    (found,) = root.rglob("metrics.json")
    metrics = json.loads(found.read_text())
    assert metrics["acc/forget"] is not None and metrics["gold/forget_acc_gap"] is not None
