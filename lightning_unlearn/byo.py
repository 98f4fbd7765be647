"""Bring your own model: rebuild a backbone from a checkpoint this package did not write.

Three kinds of file are accepted, all read with ``torch.load(weights_only=True)``:

(a) this package's checkpoints (``fit``/``unlearn``): rebuilt from their recorded config, splits checked
    (:func:`~lightning_unlearn.checkpoints.load_backbone`);
(b) a Lightning checkpoint of the user's own ``LightningModule``: the network's weights are the ``state_dict`` keys under
    one attribute (``self.net`` -> ``net.*``), given as ``network_attr`` or found as the one prefix whose weights fit;
(c) a plain ``state_dict`` (``torch.save(model.state_dict(), path)``).

For (b) and (c) the architecture is named, never read from the file: ``arch`` is a backbone of the registry
(``AllCNN``, ``ResNet18``, ``ViT``, a registered class), ``torchvision:NAME`` / ``timm:NAME`` (adapted, see
:mod:`lightning_unlearn.backbones.adapters`), or the user's own network by its import path (``pkg.module.Class``,
``pkg.module:factory``; imported because the user named it, as ``--data`` does), with ``arch_args`` for its other
arguments; classes, channels, image size and normalisation come from the DataModule. Such a file records no splits,
so the forget set is the one the user states on the DataModule, and the run records it.

The way back (:func:`export_native`): the unlearned network in the format of the file it came from, so that the
user's ``LightningModule.load_from_checkpoint`` (or ``load_state_dict``) takes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lightning_unlearn.backbones import Backbone, build_backbone, import_architecture
from lightning_unlearn.backbones.adapters import AdaptedBackbone
from lightning_unlearn.checkpoints import META_KEY, CheckpointError, load_backbone, read_checkpoint
from lightning_unlearn.filecache import file_sha256

if TYPE_CHECKING:
    from lightning_unlearn.data.base import UnlearningDataModule

_ADAPTERS = {"torchvision": "TorchvisionBackbone", "timm": "TimmBackbone"}
_ARCH_HINT = (
    "--arch NAME (AllCNN, ResNet18, ViT, torchvision:resnet18, timm:resnet10t, your pkg.module.Class or "
    "pkg.module:factory, ...) with --arch_args '{...}' for its other arguments"
)


@dataclass
class ModelSource:
    """How to read a checkpoint this package did not write (see the module docstring).

    Args:
        arch: the architecture of the weights; ``None`` accepts only this package's checkpoints.
        arch_args: further init arguments of ``arch`` (``{"width": 0.5}``, ``{"head": "classifier"}``).
        network_attr: the attribute (dotted) of a Lightning checkpoint's module holding the network; default: found.
    """

    arch: str | None = None
    arch_args: dict[str, Any] = field(default_factory=dict)
    network_attr: str | None = None

    def config(self, datamodule: UnlearningDataModule) -> dict[str, Any]:
        """The ``{"class_path", "init_args"}`` of ``arch`` for ``datamodule``'s classes, input and normalisation."""
        if not self.arch:
            raise ValueError("ModelSource.config needs an arch.")
        family, sep, name = self.arch.partition(":")
        init_args: dict[str, Any] = {
            "num_classes": int(datamodule.num_classes),
            "in_channels": int(datamodule.in_channels),
            "image_size": int(datamodule.image_size),
            "mean": [float(m) for m in datamodule.mean] or None,
            "std": [float(s) for s in datamodule.std] or None,
        }
        if sep and family in _ADAPTERS:
            return {"class_path": _ADAPTERS[family], "init_args": {"arch": name, **init_args, **self.arch_args}}
        self.resolve()
        return {"class_path": self.arch, "init_args": {**init_args, **self.arch_args}}

    def resolve(self) -> None:
        """Make ``arch`` known to the backbone registry: a built-in or registered name as it is, the user's
        ``pkg.module.Class`` / ``pkg.module:factory`` imported (the user typed it). Nothing for ``torchvision:``,
        ``timm:`` or no ``arch``."""
        if self.arch and self.arch.partition(":")[0] not in _ADAPTERS:
            import_architecture(self.arch)


def is_ours(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint written by this package (it records its backbone config)."""
    meta = read_checkpoint(path).get(META_KEY)
    return isinstance(meta, dict) and "backbone" in meta


def load_model(
    path: str | Path,
    datamodule: UnlearningDataModule,
    source: ModelSource | None = None,
    *,
    what: str | None = None,
    trained_on: str | None = None,
) -> tuple[Backbone, dict[str, Any]]:
    """``(backbone in eval mode, meta)`` from any of the three kinds of file; ``meta["splits"]`` is ``None`` for (b)
    and (c), whose ``meta["source"]`` says how they were read (format, arch, network attribute, sha256)."""
    what = what or f"checkpoint {path}"
    ckpt = read_checkpoint(path)
    meta = ckpt.get(META_KEY)
    source = source or ModelSource()
    if isinstance(meta, dict) and "backbone" in meta:
        source.resolve()  # a class the user names with --arch may rebuild the one the checkpoint records
        return load_backbone(path, datamodule, what=what, trained_on=trained_on)
    lightning = isinstance(ckpt.get("state_dict"), Mapping)
    if not source.arch:
        kind = "a Lightning checkpoint of another LightningModule" if lightning else "a plain state_dict"
        raise CheckpointError(
            f"{what} is {kind}, not a lightning_unlearn checkpoint, so its architecture is not recorded: name it with "
            f"{_ARCH_HINT}" + (" (and --network_attr ATTR if the network is not found)." if lightning else ".")
        )
    state = ckpt["state_dict"] if lightning else ckpt
    if not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(
            f"{what} does not hold a state dict of tensors; save it with torch.save(model.state_dict(), path)."
        )
    config = source.config(datamodule)
    with torch.random.fork_rng(devices=[]):  # the weights are replaced: building must not shift the training RNG
        backbone = build_backbone(config)
    prefix, weights = _fit_weights(backbone, dict(state), source, what, lightning)
    backbone.load_state_dict(weights)
    digest = file_sha256(path)
    meta = {
        "version": 1,
        "role": "external",
        "backbone": backbone.config(),
        "splits": None,
        "source": {
            "path": str(path),
            "format": "lightning" if lightning else "state_dict",
            "arch": source.arch,
            "network_attr": prefix.rstrip(".") or None,
            "sha256": digest,
        },
    }
    return backbone.eval(), meta


def _fit_weights(
    backbone: Backbone, state: dict[str, Tensor], source: ModelSource, what: str, lightning: bool
) -> tuple[str, dict[str, Tensor]]:
    """``(prefix, weights in the backbone's keys)``: the weights under ``network_attr`` (or under the one prefix that
    fits), mapped from the network's own keys for an adapter; refused with the first misfits named."""
    if source.network_attr is not None:
        prefixes = [source.network_attr.rstrip(".") + "." if source.network_attr else ""]
    else:
        firsts = {k.split(".")[0] + "." for k in state if "." in k}
        seconds = {".".join(k.split(".")[:2]) + "." for k in state if k.count(".") >= 2}
        prefixes = ["", *sorted(firsts), *sorted(seconds)]
    own = backbone.state_dict()
    report: list[tuple[int, str, str]] = []
    for prefix in prefixes:
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not sub:
            continue
        if isinstance(backbone, AdaptedBackbone) and "head.weight" not in sub:
            sub = backbone.from_native(sub)
        for key in ("mean", "std"):  # a network trained elsewhere has no normalisation buffers: the DataModule's
            sub.setdefault(key, own[key].clone())
        missing = [k for k in own if k not in sub]
        unexpected = [k for k in sub if k not in own]
        mismatched = [
            f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sub.items() if k in own and v.shape != own[k].shape
        ]
        if not (missing or unexpected or mismatched):
            return prefix, sub
        head = sub.get("head.weight")
        if head is not None and head.ndim == 2 and head.shape[0] != own["head.weight"].shape[0] and not missing:
            raise CheckpointError(
                f"{what}: the head of the {source.arch} weights{f' under {prefix!r}' if prefix else ''} has "
                f"{head.shape[0]} outputs but the DataModule has {own['head.weight'].shape[0]} classes; pass the "
                "DataModule the model was trained on."
            )
        first = (mismatched or unexpected or missing)[0]
        report.append((len(missing) + len(unexpected) + len(mismatched), prefix, first))
    if not report:
        raise CheckpointError(f"{what} has no weights under {source.network_attr!r}; check --network_attr.")
    count, prefix, first = min(report)
    args = f" {source.arch_args}" if source.arch_args else ""
    where = f" under {prefix!r}" if prefix else ""
    raise CheckpointError(
        f"{what}: its weights{where} do not fit {source.arch}{args} ({count} misfits, e.g. {first}); pass the "
        f"architecture they were trained with ({_ARCH_HINT})"
        + ("" if source.network_attr or not lightning else ", or --network_attr ATTR: the attribute holding the network")
        + "."
    )


def check_forget_stated(datamodule: UnlearningDataModule, meta: dict[str, Any], what: str) -> None:
    """A model that records no splits cannot be checked against the forget set: refuse unless the DataModule states a
    non-empty one (which the run then records)."""
    if meta.get("splits"):
        return
    if datamodule.forget is None or len(datamodule.splits.forget) == 0:
        raise CheckpointError(
            f"{what} records no splits, so there is no forget set to check it against and none to forget: state it on "
            "the data (--data.forget.classes [3], --data.forget.fraction 0.1 or --data.forget.indices_file F.json); "
            "the run records it."
        )


#: Top-level entries of a Lightning checkpoint that ``export_native`` keeps from the original file (what
#: ``load_from_checkpoint`` reads); optimizer, scheduler, loop and callback states belong to the old training.
_KEPT_ENTRIES = ("epoch", "global_step", "pytorch-lightning_version", "hyper_parameters", "hparams_name",
                 "datamodule_hyper_parameters", "datamodule_hparams_name")
#: The record an exported file carries (never the ``lightning_unlearn`` entry: the file is the user's format).
EXPORT_KEY = "lightning_unlearn_export"


def native_path(output: str | Path, source: dict[str, Any] | None) -> Path:
    """Where ``unlearn --export native`` writes beside ``output``: ``NAME.native.ckpt`` for a Lightning checkpoint,
    ``NAME.native.pt`` for a plain ``state_dict`` (also what a model of this package exports)."""
    out = Path(output)
    suffix = ".ckpt" if (source or {}).get("format") == "lightning" else ".pt"
    return out.with_name(f"{out.stem}.native{suffix}")


def export_native(
    backbone: Backbone, source: dict[str, Any] | None, path: str | Path, record: dict[str, Any] | None = None
) -> Path:
    """Write ``backbone``'s weights to the new file ``path`` in the format of the file the model came from.

    ``source`` is what :func:`load_model` recorded of that file (``meta["source"]``; an unlearned checkpoint carries
    it as ``native_source``): a Lightning checkpoint of the user's module becomes one again (its other weights,
    hyper-parameters and version kept from the original file when it is still there unchanged, the network's weights
    replaced under its attribute), loadable by ``MyModule.load_from_checkpoint``; a plain ``state_dict`` becomes the
    network's ``state_dict``. Without a source (a model of this package) it is the backbone's own ``state_dict``.
    ``record`` (e.g. the ledger) is stored as ``"lightning_unlearn_export"`` in a Lightning checkpoint.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another output path (files are never overwritten).")
    source = source or {}
    prefix = f"{source['network_attr']}." if source.get("network_attr") else ""
    native = backbone.to_native_state_dict(prefix) if hasattr(backbone, "to_native_state_dict") else {
        prefix + k: v.detach().clone() for k, v in backbone.state_dict().items()}
    native = {k: v.cpu() for k, v in native.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if source.get("format") != "lightning":
        torch.save(native, path)
        return path
    payload: dict[str, Any] = {"state_dict": native}
    template = _template(source)
    if template is not None:
        state = template.get("state_dict") or {}
        wrong = [k for k in native if k in state and tuple(state[k].shape) != tuple(native[k].shape)]
        missing = [k for k in state if k.startswith(prefix) and k not in native]
        if wrong or missing:
            raise CheckpointError(
                f"The unlearned network does not fit the network of {source.get('path')} under {prefix!r} "
                f"({(wrong or missing)[0]}); it cannot be exported in that file's format."
            )
        payload = {k: template[k] for k in _KEPT_ENTRIES if k in template}
        payload["state_dict"] = {**state, **native}
    else:
        import warnings

        import lightning

        payload["pytorch-lightning_version"] = lightning.__version__
        warnings.warn(
            f"{source.get('path')} is gone or changed since it was read, so {path} holds the network's weights alone "
            "(no other weights or hyper-parameters of your module): load it with load_state_dict(..., strict=False).",
            stacklevel=2,
        )
    if record:
        payload[EXPORT_KEY] = record
    torch.save(payload, path)
    return path


def _template(source: dict[str, Any]) -> dict[str, Any] | None:
    """The original Lightning checkpoint, if it is still there with the sha256 recorded when it was read."""
    original = source.get("path")
    if not original or not Path(original).is_file():
        return None
    if source.get("sha256") and file_sha256(original) != source["sha256"]:
        return None
    return read_checkpoint(original)
