"""The audit's jobs: train a shadow original or retrained model, unlearn with a method, score a model on the
targets. Module-level functions with picklable arguments, so that any Executor (in process, Ray) can run them; each
writes its files atomically, ``info.json`` (with the checkpoint's sha256) or ``scores.json`` last."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import numpy as np

from lightning_unlearn.audit._bench import build_backbone_for, file_sha256, quiet
from lightning_unlearn.audit._bench import trainer_kwargs as _trainer_kwargs
from lightning_unlearn.audit.config import AuditConfig
from lightning_unlearn.audit.shadow import ModelEntry, Shadow, _datamodule, _write_json
from lightning_unlearn.data.forget import index_hash

__all__ = ["score_job", "train_job", "unlearn_job"]


def _threads(cfg: AuditConfig) -> None:
    if cfg.trainer.num_threads:
        import torch

        torch.set_num_threads(int(cfg.trainer.num_threads))


def _finish(entry: ModelEntry, extra: dict[str, Any]) -> None:
    _write_json(entry.dir / "info.json", {"role": entry.role, "row": entry.row, "shadow": entry.shadow,
                                          "key_content": entry.key_content, **extra,
                                          "sha256": {entry.ckpt.name: file_sha256(entry.ckpt)}})  # fmt: skip


def train_job(cfg: AuditConfig, entry: ModelEntry, shadow: Shadow) -> float:
    """Train an original (on the half) or a retrained model (on the half minus the forget set); returns seconds."""
    import lightning.pytorch as pl

    from lightning_unlearn.methods import Classifier

    _threads(cfg)
    if entry.dir.exists():
        shutil.rmtree(entry.dir)
    entry.dir.mkdir(parents=True)
    with quiet(cfg.quiet):
        dm = _datamodule(cfg, shadow, train_on="all" if entry.role == "original" else "retain")
        pl.seed_everything(entry.seed, workers=True, verbose=False)
        model = Classifier(build_backbone_for(cfg, dm), **cfg.training.classifier_kwargs())
        trainer = pl.Trainer(max_epochs=cfg.training.epochs(entry.role), **_trainer_kwargs(cfg, entry.dir))
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        tmp = entry.dir / "model.ckpt.tmp"
        trainer.save_checkpoint(tmp)
        os.replace(tmp, entry.ckpt)
    seconds = time.perf_counter() - t0
    _finish(entry, {"train_time_s": seconds})
    return seconds


def unlearn_job(cfg: AuditConfig, entry: ModelEntry, shadow: Shadow, original: str, gold: str) -> float:
    """Run ``entry.method`` from shadow k's original through ``UnlearnTrainer.unlearn``; returns its unlearning time."""
    import inspect

    import lightning.pytorch as pl

    from lightning_unlearn.trainer import UnlearnTrainer

    assert entry.method is not None
    _threads(cfg)
    if entry.dir.exists():
        shutil.rmtree(entry.dir)
    entry.dir.mkdir(parents=True)
    spec = entry.method
    cls = spec.resolve()
    kwargs = dict(spec.init_args)
    if "seed" in inspect.signature(cls).parameters and "seed" not in kwargs:
        kwargs["seed"] = entry.seed
    with quiet(cfg.quiet):
        dm = _datamodule(cfg, shadow)
        pl.seed_everything(entry.seed, workers=True, verbose=False)
        method = cls(**kwargs)
        trainer = UnlearnTrainer(max_epochs=spec.max_epochs, **{**_trainer_kwargs(cfg, entry.dir), **spec.trainer})
        summary = trainer.unlearn(method, dm, original_ckpt=original, gold_ckpt=gold, output=str(entry.ckpt),
                                  evaluate=False, retain_collapse=None)  # fmt: skip
    seconds = float(summary["unlearn_time_s"])
    _finish(entry, {"unlearn_time_s": seconds})
    return seconds


def _logits(net: Any, loader: Any, device: str) -> tuple[Any, Any]:
    import torch

    outs, ys = [], []
    net = net.to(device).eval()
    with torch.no_grad():
        for x, y, *_ in loader:
            outs.append(net(x.to(device)).float().cpu())
            ys.append(y)
    return torch.cat(outs), torch.cat(ys)


def score_job(cfg: AuditConfig, entry: ModelEntry, shadow: Shadow, targets: list[int]) -> dict[str, Any]:
    """``phi`` (logit-scaled true-class confidence) of the model on every target, and its accuracies on D_r, D_f and
    the test set; written to ``scores.json`` with the digest of the scored checkpoint."""
    import torch

    from lightning_unlearn.audit.ulira import logit_confidence
    from lightning_unlearn.checkpoints import load_backbone
    from lightning_unlearn.data.datasets import SplitView
    from lightning_unlearn.evaluation.mia import mia_efficacy

    _threads(cfg)
    acc = str(cfg.trainer.accelerator).lower()
    device = "cuda" if acc in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"
    dm = _datamodule(cfg, shadow, train_on="retain" if entry.role == "gold" else "all")
    dm.setup("fit")
    net, _ = load_backbone(entry.ckpt, dm, what=f"{entry.role} model {entry.ckpt}")
    z, y = _logits(net, dm.loader(SplitView(dm.train_set, np.asarray(targets, dtype=np.int64))), device)
    out: dict[str, Any] = {"targets": index_hash(np.asarray(targets)), "phi": logit_confidence(z, y).tolist()}
    probs = {}
    for split, key in (("retain", "RA"), ("forget", "FA"), ("test", "TA")):
        zs, ys = _logits(net, dm.loader(split), device)
        out[key] = float((zs.argmax(1) == ys).double().mean()) if len(ys) else float("nan")
        probs[split] = (torch.softmax(zs.double(), 1), ys)
    # the population attack every toolkit reports (SalUn's MIA-efficacy: D_r vs test, applied to D_f), for comparison
    out["MIA"] = mia_efficacy(*probs["retain"], *probs["test"], *probs["forget"], seed=shadow.seed)
    out["model_sha256"] = file_sha256(entry.ckpt)
    _write_json(entry.scores_path, out)
    return out
