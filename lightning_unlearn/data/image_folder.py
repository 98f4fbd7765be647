"""Images in one folder per class or identity, e.g. a VGGFace2 subset (``root/n000002/0001_01.jpg``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from lightning_unlearn.data.base import UnlearningDataModule
from lightning_unlearn.data.datasets import FileImages, Transform
from lightning_unlearn.data.forget import ForgetSpec, stratified_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


def scan_folder(root: Path) -> dict[str, list[Path]]:
    """``{class_name: sorted image paths}`` for every sub-folder of ``root`` holding images."""
    classes = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            classes[sub.name] = files
    return classes


class ImageFolderDataModule(UnlearningDataModule):
    """One folder per class. Layout either ``root/train/<class>/*`` + ``root/test/<class>/*`` (split by folder), or
    ``root/<class>/*`` with a stratified ``test_fraction`` set aside (split by ``split_seed``). Classes are the sorted
    folder names of the training part (``classes`` restricts and orders them, e.g. the identities of a VGGFace2 subset).
    """

    name = "image_folder"

    def __init__(
        self,
        root: str,
        classes: list[str] | None = None,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        in_channels: int = 3,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        forget: ForgetSpec | None = None,
        holdout_fraction: float = 0.1,
        holdout_indices: list[int] | str | None = None,
        previous_ckpt: str | None = None,
        seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        augment: bool = True,
        train_on: str = "all",
        image_size: int = 64,
    ) -> None:
        super().__init__(
            forget=forget,
            holdout_fraction=holdout_fraction,
            holdout_indices=holdout_indices,
            previous_ckpt=previous_ckpt,
            seed=seed,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            augment=augment,
            train_on=train_on,  # type: ignore[arg-type]
            image_size=image_size,
        )
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"Image folder {self.root} does not exist. Point `root` at a folder with one sub-folder per class "
                "(or `train/` and `test/` each holding one sub-folder per class)."
            )
        self.split_by_folder = (self.root / "train").is_dir() and (self.root / "test").is_dir()
        train_root = self.root / "train" if self.split_by_folder else self.root
        found = sorted(scan_folder(train_root)) if classes is None else list(classes)
        if len(found) < 2:
            raise ValueError(f"{train_root} holds {len(found)} class folder(s) with images; at least 2 are needed.")
        self.classes = found
        self.num_classes = len(found)
        self.in_channels = in_channels
        self.mean = tuple(mean) if mean is not None else ((0.485, 0.456, 0.406) if in_channels == 3 else (0.5,))
        self.std = tuple(std) if std is not None else ((0.229, 0.224, 0.225) if in_channels == 3 else (0.25,))
        self.test_fraction = test_fraction
        self.split_seed = split_seed

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    def _collect(self, root: Path) -> tuple[list[str], list[int]]:
        scanned = scan_folder(root)
        missing = [c for c in self.classes if c not in scanned]
        if missing:
            raise FileNotFoundError(f"{root} has no images for class folder(s) {missing[:5]}.")
        paths, targets = [], []
        for label, name in enumerate(self.classes):
            paths += [str(p) for p in scanned[name]]
            targets += [label] * len(scanned[name])
        return paths, targets

    def load_datasets(self) -> tuple[Dataset, Dataset]:
        if self.split_by_folder:
            train = self._collect(self.root / "train")
            test = self._collect(self.root / "test")
        else:
            paths, targets = self._collect(self.root)
            train_idx, test_idx = stratified_split(targets, self.test_fraction, self.split_seed)
            p, t = np.asarray(paths), np.asarray(targets)
            train = (p[train_idx].tolist(), t[train_idx].tolist())
            test = (p[test_idx].tolist(), t[test_idx].tolist())
        return (
            FileImages(train[0], train[1], self.image_size, self.in_channels),
            FileImages(test[0], test[1], self.image_size, self.in_channels),
        )

    def train_transform(self) -> Transform | None:
        from torchvision.transforms import v2

        return v2.Compose(
            [v2.RandomResizedCrop(self.image_size, scale=(0.8, 1.0), antialias=True), v2.RandomHorizontalFlip()]
        )
