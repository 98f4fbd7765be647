"""Reading and writing model checkpoints with their provenance.

Every checkpoint this package writes (Lightning's from ``fit``, ours from ``unlearn``) holds the backbone weights under
``state_dict["model.*"]`` and a ``"lightning_unlearn"`` entry: the backbone config (to rebuild the architecture), the
splits (spec, seed, sizes, sha256 of every index set), the role (original / gold / unlearned) and timings. Checkpoints
are read with ``torch.load(weights_only=True)`` and never written over.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lightning_unlearn.backbones import Backbone, build_backbone
from lightning_unlearn.data.forget import SPLIT_NAMES
from lightning_unlearn.filecache import file_version, racy

if TYPE_CHECKING:
    from lightning_unlearn.data.base import UnlearningDataModule

META_KEY = "lightning_unlearn"
PREFIX = "model."


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked (not ours, wrong architecture, wrong classes)."""


#: Checkpoints read in this process, by file version (path, inode, size, modification time): a benchmark row reads
#: its original and gold models in ``UnlearnTrainer.unlearn``, the evaluator and the group copy's check, and every row
#: of a group reads the same files. Entries share their tensors (callers copy them into a network, never change them);
#: at most ``READ_CACHE_MAX_BYTES`` of tensors are kept (least recently used first out).
_READ_CACHE: OrderedDict[tuple[Any, ...], tuple[dict[str, Any], int]] = OrderedDict()
READ_CACHE_MAX_BYTES = 512 * 2**20


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with readable errors; each version of a file is decoded once per process
    (the containers returned are fresh, the tensors shared: do not modify them in place)."""
    path = Path(path)
    key = file_version(path)
    found = _READ_CACHE.get(key) if key is not None else None
    if found is not None:
        _READ_CACHE.move_to_end(key)  # type: ignore[arg-type]
        return _fresh(found[0])
    read_at = time.time()
    ckpt = _read_checkpoint(path)
    if key is not None and not racy(key, read_at):
        size = _tensor_bytes(ckpt)
        if size <= READ_CACHE_MAX_BYTES:
            _READ_CACHE[key] = (ckpt, size)
            while sum(n for _, n in _READ_CACHE.values()) > READ_CACHE_MAX_BYTES:
                _READ_CACHE.popitem(last=False)
    return _fresh(ckpt)


def clear_read_cache() -> None:
    """Forget every checkpoint :func:`read_checkpoint` kept."""
    _READ_CACHE.clear()


def _fresh(obj: Any) -> Any:
    """A copy of the containers of ``obj`` (dicts, lists, tuples), its tensors and other leaves shared."""
    if isinstance(obj, dict):
        out = type(obj)() if type(obj) in (dict, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _fresh(v)
        if getattr(obj, "__dict__", None) and hasattr(out, "__dict__"):
            vars(out).update(vars(obj))  # a state_dict's ``_metadata`` (module versions for load_state_dict)
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_fresh(v) for v in obj)
    return obj


def _tensor_bytes(obj: Any) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _read_checkpoint(path: Path) -> dict[str, Any]:
    if path.is_dir():
        inside = sorted(str(p) for p in path.rglob("*.ckpt"))[:3]
        raise IsADirectoryError(
            f"Checkpoint {path} is a directory: pass the checkpoint file itself"
            + (f" (found inside: {', '.join(inside)})." if inside else " (no *.ckpt file in it).")
        )
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}.")
    if not _looks_like_torch_file(path):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (neither a torch.save zip archive nor a legacy pickle). Pass a .ckpt "
            "written by `lightning_unlearn fit` or `lightning_unlearn unlearn`."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with advice
        raise CheckpointError(
            f"Could not read {path} as a weights-only checkpoint ({type(err).__name__}: {str(err).splitlines()[0]}). "
            "Checkpoints are loaded with torch.load(weights_only=True), which admits only tensors and plain "
            "containers: use a checkpoint written by `lightning_unlearn fit`/`unlearn` (never a pickled module)."
        ) from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} does not hold a dict (found {type(ckpt).__name__}).")
    return ckpt


def _looks_like_torch_file(path: Path) -> bool:
    """A zip archive (``torch.save``'s format since 1.6) or a legacy pickle (starts with the PROTO opcode)."""
    import zipfile

    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and head[1] <= 5


def check_state_shapes(backbone: Backbone, state: dict[str, torch.Tensor], what: str, config: dict[str, Any]) -> None:
    """Refuse weights whose shapes contradict the architecture recorded beside them (before ``load_state_dict``)."""
    own = backbone.state_dict()
    head = state.get("head.weight")
    recorded = config.get("init_args", {}).get("num_classes")
    if head is not None and head.ndim == 2 and head.shape[0] != own["head.weight"].shape[0]:
        raise CheckpointError(
            f"{what} is inconsistent: its head has {head.shape[0]} outputs but its recorded backbone config says "
            f"num_classes={recorded}. The file was edited or assembled by hand; use a checkpoint written by "
            "`lightning_unlearn fit`/`unlearn`."
        )
    mismatched = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise CheckpointError(
            f"{what} is inconsistent: its weights do not fit its recorded backbone {config.get('class_path')} "
            f"({'; '.join(mismatched[:3])}). Use a checkpoint written by `lightning_unlearn fit`/`unlearn`."
        )


def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or inf (one host sync for all of them)."""
    names = [k for k, v in tensors.items() if torch.is_tensor(v) and v.is_floating_point()]
    if not names:
        return []
    flags = torch.stack([torch.isfinite(tensors[k]).all() for k in names]).cpu().tolist()
    return [k for k, ok in zip(names, flags, strict=True) if not ok]


def checkpoint_meta(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> dict[str, Any]:
    meta = ckpt.get(META_KEY)
    if not isinstance(meta, dict) or "backbone" not in meta:
        raise CheckpointError(
            f"{path} was not written by lightning_unlearn (no '{META_KEY}' entry with a backbone config), so the "
            "architecture cannot be rebuilt. Train it with `lightning_unlearn fit`, or build the backbone yourself and "
            "use `lightning_unlearn.backbones.load_weights`."
        )
    return meta


def backbone_state_dict(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    state = ckpt.get("state_dict", ckpt)
    return {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}


def load_backbone(
    path: str | Path,
    datamodule: UnlearningDataModule | None = None,
    *,
    what: str | None = None,
    check_splits: bool = True,
    trained_on: str | None = None,
) -> tuple[Backbone, dict[str, Any]]:
    """Rebuild the backbone stored in ``path``; with a DataModule, check classes, input and split hashes against it.

    Returns ``(backbone in eval mode, meta)``. Raises :class:`CheckpointError` for a checkpoint that does not match the
    DataModule's classes or image size/channels, or (with ``trained_on``, e.g. ``"retain"`` for a gold model) was not
    trained on that split; :class:`~lightning_unlearn.data.base.InputMismatchError` for a recorded input (DataModule
    class, image size, channels, normalisation, classes) that differs, and
    :class:`~lightning_unlearn.data.SplitMismatchError` for different splits. Loading leaves the global RNGs untouched.
    """
    what = what or f"checkpoint {path}"
    ckpt = read_checkpoint(path)
    meta = checkpoint_meta(ckpt, path)
    config = meta["backbone"]
    if trained_on is not None:
        check_trained_on(meta, trained_on, what)
    if datamodule is not None:
        ckpt_classes = int(config.get("init_args", {}).get("num_classes", -1))
        if ckpt_classes != datamodule.num_classes:
            raise CheckpointError(
                f"{what} has a head with {ckpt_classes} outputs but the DataModule ({datamodule.name}) has "
                f"num_classes={datamodule.num_classes}. Use the checkpoint trained on this dataset."
            )
        _check_backbone_input(config, datamodule, what)
    # The weights are overwritten below: building must not draw from (and so shift) the training RNG.
    with torch.random.fork_rng(devices=[]):
        backbone = build_backbone(config, untrusted=True)  # a recorded config: no file loads, no downloads
    state = backbone_state_dict(ckpt)
    check_state_shapes(backbone, state, what, config)
    bad = non_finite_tensors(state)
    if bad:  # a model that diverged before it was given: not the learning rate of the run that reads it
        raise CheckpointError(f"{what} holds NaN/inf weights ({', '.join(bad[:3])}); it cannot be used.")
    result = backbone.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{what} does not match its recorded backbone {config['class_path']}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}."
        )
    if datamodule is not None and check_splits and meta.get("splits"):
        datamodule.verify_splits(meta["splits"], what)
    return backbone.eval(), meta


def check_trained_on(meta: dict[str, Any], expected: str, what: str) -> None:
    """Refuse a checkpoint whose recorded ``splits["train_on"]`` is not ``expected`` (a gold model must have been
    trained on D_r: ``"retain"``), naming what it records."""
    splits = meta.get("splits") or {}
    given = splits.get("train_on")
    if given == expected:
        return
    names = {"retain": "D_r (the retained data, train_on=retain)", "all": "D = D_r + D_f (train_on=all)"}
    recorded = (
        f"records train_on={given!r} (role {meta.get('role', 'unknown')!r})"
        if given is not None
        else f"does not record which data it was trained on (role {meta.get('role', 'unknown')!r})"
    )
    raise CheckpointError(
        f"{what} {recorded}, but it must have been trained on {names.get(expected, expected)}. A gold model is "
        "retrained from scratch without D_f: train it with `lightning_unlearn fit ... --data.init_args.train_on "
        "retain` and pass that checkpoint."
    )


def _check_backbone_input(config: dict[str, Any], datamodule: UnlearningDataModule, what: str) -> None:
    """The input size and channels the backbone was built for (recorded in every checkpoint) against the DataModule's.
    A fully convolutional network loads at any size, so without this an 8x8-trained model runs on 16x16 images."""
    init_args = config.get("init_args") or {}
    for key in ("image_size", "in_channels"):
        given, actual = init_args.get(key), getattr(datamodule, key, None)
        if given is not None and actual is not None and int(given) != int(actual):
            raise CheckpointError(
                f"{what} was built for {key}={given} but the DataModule ({datamodule.name}) serves {key}={actual}. "
                f"Set the DataModule's {key} to {given} (as for training), or use a checkpoint trained on this input."
            )


def save_checkpoint(
    path: str | Path,
    backbone: Backbone,
    meta: dict[str, Any],
    *,
    protect: tuple[str | Path | None, ...] = (),
) -> Path:
    """Write ``backbone`` with ``meta`` to a new file ``path`` (plus ``splits.json`` beside it).

    Refuses to write over an existing file or over any path in ``protect`` (the inputs of the run).
    """
    path = Path(path)
    for p in protect:
        if p is not None and Path(p).resolve() == path.resolve():
            raise FileExistsError(f"Refusing to write the output over the input checkpoint {p}.")
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another output path (checkpoints are never overwritten).")
    bad = non_finite_tensors(backbone.state_dict())
    if bad:
        raise FloatingPointError(
            f"Refusing to write {path}: the model holds NaN/inf weights ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}). Nothing was written."
        )
    if meta.get("splits"):
        check_splits_json(path.parent, meta["splits"])
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {PREFIX + k: v.detach().cpu() for k, v in backbone.state_dict().items()}
    payload = {"state_dict": state, META_KEY: {**meta, "backbone": backbone.config()}}
    torch.save(payload, path)
    if meta.get("splits"):
        write_splits_json(path.parent, meta["splits"])
    return path


def write_splits_json(directory: str | Path, splits: dict[str, Any]) -> Path:
    """Write ``splits.json`` in ``directory``; one that describes other splits is refused, never overwritten."""
    out = check_splits_json(directory, splits)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file():  # an existing one describes the same splits (checked): left as it is
        out.write_text(json.dumps(splits, indent=1))
    return out


def check_splits_json(directory: str | Path, splits: dict[str, Any]) -> Path:
    """``directory/splits.json``, after checking that an existing one describes the same splits (else refused)."""
    out = Path(directory) / "splits.json"
    if out.exists():
        try:
            same = json.loads(out.read_text()).get("hashes") == splits.get("hashes")
        except (OSError, ValueError, AttributeError):
            same = False
        if not same:
            raise FileExistsError(
                f"{out} exists and describes other splits; write this run to another directory (files are never "
                "overwritten)."
            )
    return out


def check_same_forget_set(meta_a: dict[str, Any], meta_b: dict[str, Any], what_a: str, what_b: str) -> None:
    """Original, gold and unlearned models must describe the same splits."""
    from lightning_unlearn.data.forget import check_hashes

    a, b = meta_a.get("splits") or {}, meta_b.get("splits") or {}
    check_hashes(a.get("hashes", {}), b.get("hashes", {}), names=SPLIT_NAMES, what=what_a, against=what_b)
