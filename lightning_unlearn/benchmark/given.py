"""The models a user brings to the benchmark (``original_ckpt``, a target's ``gold_ckpt``): how a file is read and the
checks made on it before anything is trained (:func:`check_given`). Nothing here writes; the file is read weights-only
(:mod:`lightning_unlearn.byo`), and its sha256 is what the benchmark's cache keys and rows record.

* this package's checkpoints (``fit``, the benchmark's own ``models/*/model.ckpt``) are rebuilt from their recorded
  architecture and checked as ``unlearn`` checks them: an original must record ``train_on=all`` and the benchmark's
  holdout and test splits (it is trained on all of D, so it serves every forget target of its seed); a gold model must
  record ``train_on=retain`` and the very splits of its target (the same forget set);
* any other file (a Lightning checkpoint of the user's module, a plain ``state_dict``) is read with ``model_source``
  (``arch``, ``arch_args``, ``network_attr``; no ``arch``: the configured ``backbone:``) and must fit that architecture
  and the DataModule; it records no splits, so the forget set is the one the benchmark states, and the row says the
  split was not checkable (``<role>_splits_checked: false``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_unlearn.byo import ModelSource, is_ours, load_model
from lightning_unlearn.checkpoints import check_trained_on, load_backbone, non_finite_tensors
from lightning_unlearn.data.forget import SPLIT_NAMES
from lightning_unlearn.experiment import ConfigError
from lightning_unlearn.filecache import file_sha256

__all__ = ["GIVEN_ROLES", "check_given", "given_source"]

GIVEN_ROLES = ("original", "gold")
_HOLDOUT_AND_TEST = ("holdout", "test")  # an original on all of D shares them with every target (D = train - holdout)


def given_source(cfg: Any) -> Any:
    """The :class:`~lightning_unlearn.byo.ModelSource` of a given file that is not this package's: ``model_source``,
    its ``arch`` defaulting to the configured ``backbone:`` (and ``arch_args`` then to its ``init_args``)."""
    ms = dict(cfg.model_source or {})
    if ms.get("arch"):
        return ModelSource(str(ms["arch"]), dict(ms.get("arch_args") or {}), ms.get("network_attr"))
    return ModelSource(str(cfg.backbone["class_path"]), dict(cfg.backbone["init_args"]), ms.get("network_attr"))


def check_given(cfg: Any, path: str, role: str, dm: Any, where: str) -> dict[str, Any]:
    """Check the user's ``role`` model (``"original"`` or ``"gold"``) at ``path`` against ``dm`` (the group's
    DataModule, set up); returns what the benchmark records of it: ``{path, sha256, format, splits_checked,
    train_time_s, source}``. Raises :class:`ConfigError` (one line, starting with ``where``) for a missing
    file, weights that do not fit the architecture or the DataModule, NaN/inf weights, or a checkpoint of this package
    trained on other data (see the module docstring)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{where}: {p} is a directory; give the checkpoint file itself.")
    if not p.is_file():
        raise ConfigError(f"{where}: {p} not found; give the path of your {role} model's checkpoint file.")
    what = f"the given {role} model {p}"
    source = given_source(cfg)
    try:
        ours = is_ours(p)
        if ours:
            backbone, meta = load_backbone(p, dm, what=what, check_splits=False)
            splits = meta.get("splits")
            if splits:
                check_trained_on(meta, "all" if role == "original" else "retain", what)
                dm.verify_splits(splits, what, names=_HOLDOUT_AND_TEST if role == "original" else SPLIT_NAMES)
            if role == "original":
                _check_original(meta, f"{where}: {what}")
        else:
            backbone, meta = load_model(p, dm, source, what=what)
            splits = None
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - CheckpointError, SplitMismatchError, InputMismatchError, OSError, ...
        raise ConfigError(f"{where}: {_in_config_terms(err)}") from err
    bad = non_finite_tensors(backbone.state_dict())
    if bad:
        raise ConfigError(f"{where}: {what} holds NaN/inf weights ({', '.join(bad[:3])}); it cannot be used.")
    src = meta.get("source") or {}
    return {
        "path": str(p.resolve()),
        "sha256": file_sha256(p),  # this very file's (a copy the benchmark imported records its source's in "source")
        "format": "lightning_unlearn" if ours else src.get("format"),
        "splits_checked": bool(splits),
        "train_time_s": meta.get("train_time_s") if ours else None,
        "source": None if ours else {"arch": source.arch, "arch_args": source.arch_args,
                                     "network_attr": src.get("network_attr")},
    }


#: The roles a checkpoint of this package records when it may stand for the original (``model``: trained on all of D
#: with nothing to forget; an older checkpoint records none).
_ORIGINAL_ROLES = (None, "original", "model")


def _check_original(meta: dict[str, Any], what: str) -> None:
    """Refuse, as the original, a checkpoint of this package that records another role or deletion requests made on it:
    an unlearned model records ``train_on: all`` too, which alone let it pass (a gold one is refused by ``train_on``)."""
    recorded, ledger = meta.get("role"), meta.get("ledger") or []
    if recorded in _ORIGINAL_ROLES and not ledger:
        return
    requests = f" and {len(ledger)} deletion request(s)" if ledger else ""
    raise ConfigError(f"{what} records role {recorded!r}{requests}: it is not an original model; give the model as it "
                      "was trained on all of D (`lightning_unlearn fit`), not one unlearned from it.")


def _in_config_terms(err: Exception) -> str:
    """The loader's message on one line, its ``unlearn`` flags named as this config's keys."""
    text = " ".join(str(err).split())
    for flag in ("arch_args", "network_attr", "arch"):
        text = text.replace(f"--{flag}", f"model_source.{flag}")
    return text
