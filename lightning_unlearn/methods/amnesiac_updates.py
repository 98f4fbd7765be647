"""The recorder of Amnesiac Machine Learning (Graves, Nagisetty & Ganesh, AAAI 2021) and its file format: while the
original model is trained, :class:`AmnesiacRecorder` stores the parameter updates of every batch that held a sensitive
sample (``amnesiac_updates.pt``, read back with ``weights_only=True`` by :func:`load_updates`); :class:`~.amnesiac.Amnesiac`
subtracts them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import batch_indices

__all__ = ["AmnesiacRecorder", "AmnesiacUpdatesError", "HOW_TO_RECORD", "UPDATES_FILENAME", "load_updates",
           "weights_fingerprint"]

UPDATES_FILENAME = "amnesiac_updates.pt"
_FORMAT = "lightning_unlearn.amnesiac_updates"
_VERSION = 1
HOW_TO_RECORD = (
    "Record them while training the original model: `lightning_unlearn fit ... "
    "--trainer.callbacks+=lightning_unlearn.methods.AmnesiacRecorder` (Python: "
    "`Trainer(callbacks=[AmnesiacRecorder()])`), which writes `<checkpoint dir>/amnesiac_updates.pt`, and pass that "
    "file as `updates` (CLI: `--model.init_args.updates PATH`)."
)


class AmnesiacUpdatesError(RuntimeError):
    """The recorded updates are missing, unreadable, or do not fit the model / forget set being unlearned."""



# -- recording ---------------------------------------------------------------------------------------------------------
def _recorded_module(pl_module: nn.Module) -> nn.Module:
    """The network whose updates are recorded: ``pl_module.model`` (the backbone) when there is one."""
    model = getattr(pl_module, "model", None)
    return model if isinstance(model, nn.Module) else pl_module


def _float_buffers(module: nn.Module) -> dict[str, Tensor]:
    return {n: b for n, b in module.named_buffers() if b.is_floating_point()}


def weights_fingerprint(module: nn.Module) -> Tensor:
    """Per-tensor (sum, sum of squares) of parameters and float buffers, in float64: identifies a set of weights."""
    tensors = dict(module.named_parameters())
    tensors.update(_float_buffers(module))
    rows = [torch.stack([t.detach().double().sum(), t.detach().double().pow(2).sum()]) for t in _sorted(tensors)]
    return torch.stack(rows).cpu() if rows else torch.zeros(0, 2, dtype=torch.float64)


def _sorted(tensors: dict[str, Tensor]) -> list[Tensor]:
    return [tensors[k] for k in sorted(tensors)]


def _read_indices_file(path: str) -> np.ndarray:
    text = Path(path).read_text()
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        values = text.replace(",", " ").split()
    return np.asarray([int(v) for v in values], dtype=np.int64)


class AmnesiacRecorder(Callback):
    """Records, during ``fit``, the parameter updates of every optimizer step whose batch held a sensitive sample.

    For each such step it adds ``theta_after - theta_before`` to a running sum (one copy of the weights, whatever the
    number of steps) and notes the step, epoch, batch index and the sensitive sample indices the batch held. At the end
    of training it writes everything with ``torch.save`` (tensors, lists and dicts only: loadable with
    ``weights_only=True``) to ``path`` (default ``<checkpoint dir>/amnesiac_updates.pt``); :class:`Amnesiac` subtracts
    the sum. With gradient accumulation, a step counts as sensitive when any batch of its window was.

    BatchNorm running statistics are buffers, not parameters: with ``record_buffers=True`` (default) the change of every
    floating-point buffer during each sensitive batch's forward pass is summed too, so the running mean/variance
    contributions of those batches can be removed as well (Graves et al.'s notebook records only ``weight``/``bias``
    tensors and leaves the running statistics as trained). Integer buffers (``num_batches_tracked``) are not touched.

    The running sums are part of the callback's state, so a run resumed with ``ckpt_path`` keeps recording correctly.

    Args:
        sensitive: which training-set sample indices are sensitive. ``None`` (default): the DataModule's forget split
            D_f. A list of indices; a split name (``"forget"``, ``"retain"``, ``"holdout"``); ``"all"`` (every batch,
            e.g. to check that subtracting everything returns the initial weights); or a path to a file of indices
            (JSON list, or whitespace/comma separated integers).
        path: output file (default ``<checkpoint dir>/amnesiac_updates.pt``, next to the model checkpoint).
        record_buffers: also record the deltas of floating-point buffers (BatchNorm running statistics).
    """

    def __init__(
        self, sensitive: list[int] | str | None = None, path: str | None = None, record_buffers: bool = True
    ) -> None:
        super().__init__()
        self.sensitive = sensitive
        self.path = path
        self.record_buffers = record_buffers
        self.saved_path: Path | None = None
        self._sensitive_idx: Tensor | None = None  # sorted; None = every sample is sensitive
        self._reset_records()

    def _reset_records(self) -> None:
        self.param_sum: dict[str, Tensor] = {}
        self.buffer_sum: dict[str, Tensor] = {}
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.batch_idx: list[int] = []
        self.sample_indices: list[Tensor] = []
        self.total_steps = 0
        self._window: list[Tensor] = []
        self._window_batches = 0
        self._param_before: dict[str, Tensor] | None = None
        self._buffer_before: dict[str, Tensor] | None = None
        self._stepped = False

    # -- sensitive set -------------------------------------------------------------------------------------------
    def _resolve_sensitive(self, trainer: Trainer) -> Tensor | None:
        s = self.sensitive
        dm = getattr(trainer, "datamodule", None)
        if isinstance(s, str) and s.lower() == "all":
            return None
        if s is None or (isinstance(s, str) and s in ("forget", "retain", "holdout")):
            name = s or "forget"
            if dm is None or not hasattr(dm, "splits"):
                raise ValueError(
                    "AmnesiacRecorder: the sensitive set defaults to the DataModule's forget split, but this run "
                    "has no UnlearningDataModule. Pass `sensitive=[indices]`, a file of indices, or 'all'."
                )
            idx = np.asarray(dm.indices(name), dtype=np.int64)
            if name == "forget" and len(idx) == 0:
                raise ValueError(
                    "AmnesiacRecorder: the DataModule's forget split is empty, so no update would be recorded. "
                    "Give the DataModule a `forget` spec (the one you will unlearn), or pass `sensitive=`."
                )
        elif isinstance(s, str):
            if not Path(s).is_file():
                raise FileNotFoundError(
                    f"AmnesiacRecorder: sensitive={s!r} is neither 'all', a split name (forget, retain, "
                    "holdout) nor an existing file of indices."
                )
            idx = _read_indices_file(s)
        else:
            idx = np.asarray(list(s), dtype=np.int64)
        return torch.as_tensor(np.unique(idx), dtype=torch.long)

    def _sensitive_in(self, indices: Tensor) -> Tensor:
        if self._sensitive_idx is None:
            return indices
        return indices[torch.isin(indices, self._sensitive_idx.to(indices.device))]

    # -- hooks ---------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sensitive_idx = self._resolve_sensitive(trainer)
        module = _recorded_module(pl_module)
        if trainer.ckpt_path is None or not self.param_sum:  # a fresh run (a resumed one restored its sums)
            self._reset_records()
            self.param_sum = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in module.named_parameters()}
            if self.record_buffers:
                self.buffer_sum = {n: torch.zeros_like(b) for n, b in _float_buffers(module).items()}
        else:
            dev = next(module.parameters()).device
            self.param_sum = {n: t.to(dev) for n, t in self.param_sum.items()}
            self.buffer_sum = {n: t.to(dev) for n, t in self.buffer_sum.items()}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        idx = batch_indices(batch)
        if idx is None:
            raise ValueError(
                "AmnesiacRecorder needs the sample index of every training item (batches of (x, y, index), as the "
                "lightning_unlearn DataModules give) to know which batches held sensitive samples."
            )
        hit = self._sensitive_in(torch.as_tensor(idx))
        self._window_batches += 1
        if hit.numel():
            self._window.append(hit.detach().cpu().long())
            if self.record_buffers:
                buffers = _float_buffers(_recorded_module(pl_module))
                self._buffer_before = {n: b.detach().clone() for n, b in buffers.items()}

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        sensitive = bool(self._window)
        if trainer.world_size > 1:  # the update is shared by all ranks: sensitive if any rank's batch was
            sensitive = bool(trainer.strategy.reduce_boolean_decision(sensitive, all=False))
        if sensitive:
            module = _recorded_module(pl_module)
            self._param_before = {n: p.detach().clone() for n, p in module.named_parameters()}
        self._stepped = True

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        module = _recorded_module(pl_module)
        if self._buffer_before is not None:
            for n, b in _float_buffers(module).items():
                if n in self.buffer_sum:
                    self.buffer_sum[n] += b.detach() - self._buffer_before[n]
            self._buffer_before = None
        if not self._stepped:
            return
        if self._param_before is not None:
            for n, p in module.named_parameters():
                self.param_sum[n] += (p.detach() - self._param_before[n]).float()
            self.steps.append(int(trainer.global_step) - 1)
            self.epochs.append(int(trainer.current_epoch))
            self.batch_idx.append(int(batch_idx))
            self.sample_indices.append(torch.cat(self._window) if self._window else torch.zeros(0, dtype=torch.long))
        self.total_steps += 1
        self._window, self._window_batches = [], 0
        self._param_before, self._stepped = None, False

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = Path(self.path) if self.path else self._default_dir(trainer) / UPDATES_FILENAME
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.payload(trainer, pl_module), path)
            rank_zero_info(
                f"AmnesiacRecorder: {len(self.steps)} of {self.total_steps} optimizer steps held sensitive samples; "
                f"their summed updates are in {path}."
            )
        self.saved_path = path

    @staticmethod
    def _default_dir(trainer: Trainer) -> Path:
        ckpt = trainer.checkpoint_callback
        dirpath = getattr(ckpt, "dirpath", None) if ckpt is not None else None
        return Path(dirpath or trainer.log_dir or trainer.default_root_dir)

    def payload(self, trainer: Trainer | None, pl_module: nn.Module) -> dict[str, Any]:
        """What is written to the updates file (tensors, lists, dicts and plain values only)."""
        module = _recorded_module(pl_module)
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        splits = dm.splits_info() if dm is not None and hasattr(dm, "splits_info") else {}
        train_set = getattr(dm, "train_set", None) if dm is not None and hasattr(dm, "splits") else None
        config = module.config() if isinstance(module, Backbone) else None
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "param_sum": {n: t.detach().cpu() for n, t in self.param_sum.items()},
            "buffer_sum": {n: t.detach().cpu() for n, t in self.buffer_sum.items()},
            "sensitive": None if self._sensitive_idx is None else self._sensitive_idx.cpu(),
            "steps": torch.tensor(self.steps, dtype=torch.long),
            "epochs": torch.tensor(self.epochs, dtype=torch.long),
            "batch_idx": torch.tensor(self.batch_idx, dtype=torch.long),
            "sample_indices": [t.cpu() for t in self.sample_indices],
            "total_steps": int(self.total_steps),
            "fingerprint": weights_fingerprint(module),
            "dataset": splits.get("dataset"),
            "train_size": None if train_set is None else len(train_set),
            "split_hashes": dict(splits.get("hashes", {})),
            "backbone": config,
        }

    # -- resume ----------------------------------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        # unique per configuration, so several recorders (e.g. different sensitive sets) can run in one Trainer
        sensitive = self.sensitive if self.sensitive is None or isinstance(self.sensitive, str) else len(self.sensitive)
        return self._generate_state_key(sensitive=sensitive, path=self.path, record_buffers=self.record_buffers)

    def state_dict(self) -> dict[str, Any]:
        return {
            "param_sum": {n: t.detach().cpu() for n, t in self.param_sum.items()},
            "buffer_sum": {n: t.detach().cpu() for n, t in self.buffer_sum.items()},
            "steps": list(self.steps),
            "epochs": list(self.epochs),
            "batch_idx": list(self.batch_idx),
            "sample_indices": [t.cpu() for t in self.sample_indices],
            "total_steps": int(self.total_steps),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.param_sum = dict(state_dict.get("param_sum", {}))
        self.buffer_sum = dict(state_dict.get("buffer_sum", {}))
        self.steps = list(state_dict.get("steps", []))
        self.epochs = list(state_dict.get("epochs", []))
        self.batch_idx = list(state_dict.get("batch_idx", []))
        self.sample_indices = list(state_dict.get("sample_indices", []))
        self.total_steps = int(state_dict.get("total_steps", 0))


# -- unlearning by subtraction ----------------------------------------------------------------------------------------
def load_updates(path: str | Path) -> dict[str, Any]:
    """Read an :class:`AmnesiacRecorder` file (``weights_only=True``), with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise AmnesiacUpdatesError(f"Amnesiac: the recorded updates file {path} does not exist. {HOW_TO_RECORD}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with advice
        raise AmnesiacUpdatesError(f"Amnesiac: could not read {path} ({type(err).__name__}: {err}). {HOW_TO_RECORD}")
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise AmnesiacUpdatesError(f"Amnesiac: {path} is not an AmnesiacRecorder file. {HOW_TO_RECORD}")
    if int(data.get("version", 0)) > _VERSION:
        raise AmnesiacUpdatesError(f"Amnesiac: {path} has format version {data['version']}; this reads {_VERSION}.")
    return data
