"""The audit's jobs: train a shadow original or retrained model, unlearn with a method, score a model on the
targets. Module-level functions with picklable arguments, so that any Executor (in process, Ray) can run them; each
writes its files atomically, ``info.json`` (with the checkpoint's sha256) or ``scores.json`` last."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lightning_unlearn.audit.config import AuditConfig
from lightning_unlearn.audit.shadow import ModelEntry, Shadow, shadow_datamodule
from lightning_unlearn.audit.ulira import logit_confidence
from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.data.datasets import SplitView
from lightning_unlearn.data.forget import index_hash
from lightning_unlearn.evaluation.mia import mia_efficacy
from lightning_unlearn.experiment import (
    eval_device,
    fresh_dir,
    quiet,
    set_threads,
    train_classifier,
    trainer_kwargs,
    unlearn,
    write_json,
    write_model_info,
)
from lightning_unlearn.filecache import file_sha256

__all__ = ["score_job", "train_job", "unlearn_job"]


def _finish(entry: ModelEntry, extra: dict[str, Any]) -> None:
    write_model_info(entry.dir, {"role": entry.role, "row": entry.row, "shadow": entry.shadow,
                                 "key_content": entry.key_content, **extra}, [entry.ckpt])


def train_job(cfg: AuditConfig, entry: ModelEntry, shadow: Shadow, threads: int | None = None) -> float:
    """Train an original (on the half) or a retrained model (on the half minus the forget set); returns the training
    time its checkpoint records."""
    set_threads(threads)
    fresh_dir(entry.dir)
    with quiet(cfg.quiet):
        dm = shadow_datamodule(cfg, shadow, train_on="all" if entry.role == "original" else "retain")
        seconds = train_classifier(dm, cfg.backbone, cfg.training, entry.role, entry.seed, entry.ckpt,
                                   trainer_kwargs(cfg.trainer, entry.dir))
    _finish(entry, {"train_time_s": seconds})
    return seconds


def unlearn_job(cfg: AuditConfig, entry: ModelEntry, shadow: Shadow, original: str, gold: str,
                threads: int | None = None) -> float:
    """Run ``entry.method`` from shadow k's original through ``UnlearnTrainer.unlearn``; returns its unlearning time."""
    if entry.method is None:
        raise ValueError(f"{entry.name} is not an unlearned model")
    set_threads(threads)
    fresh_dir(entry.dir)
    with quiet(cfg.quiet):
        dm = shadow_datamodule(cfg, shadow)
        summary = unlearn(entry.method, dm, entry.seed, original, gold, entry.ckpt,
                          trainer_kwargs(cfg.trainer, entry.dir), evaluate=False)
    seconds = float(summary["unlearn_time_s"])
    _finish(entry, {"unlearn_time_s": seconds})
    return seconds


def _logits(net: Any, loader: Any, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    outs, ys = [], []
    net = net.to(device).eval()
    with torch.no_grad():
        for x, y, *_ in loader:
            outs.append(net(x.to(device)).float().cpu())
            ys.append(y)
    return torch.cat(outs), torch.cat(ys)


def score_job(cfg: AuditConfig, entry: ModelEntry, shadow: Shadow, targets: list[int],
              threads: int | None = None) -> dict[str, Any]:
    """``phi`` (logit-scaled true-class confidence) of the model on every target, and its accuracies on D_r, D_f and
    the test set; written to ``scores.json`` with the digest of the scored checkpoint."""
    set_threads(threads)
    device = eval_device(cfg.trainer.accelerator)
    dm = shadow_datamodule(cfg, shadow, train_on="retain" if entry.role == "gold" else "all")
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
    write_json(entry.scores_path, out)
    return out
