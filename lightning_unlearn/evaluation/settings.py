"""The evaluator's settings and the components they enable, in the order their keys appear in ``metrics.json``.

:class:`EvaluatorSettings` checks every option (one readable line per bad value, from the component that owns it) and
builds the component list afresh at each evaluation, so an option changed on the evaluator after construction (the
CLI sets ``output_dir``, ``unlearn_time_s``) is honoured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from lightning_unlearn.evaluation.cka import RepresentationCKA
from lightning_unlearn.evaluation.component import Component, component_class
from lightning_unlearn.evaluation.probe import LinearProbe
from lightning_unlearn.evaluation.relearn import RelearnAttack
from lightning_unlearn.evaluation.standard import (
    REFERENCE_SPLITS,
    Accuracy,
    Cost,
    GoldComparison,
    MembershipInference,
    ZeroRetrainForgetting,
)

__all__ = ["METRIC_KEYS", "OPTIONAL_SETTINGS", "REPRESENTATION_KEYS", "EvaluatorSettings"]

#: The keys of a full evaluation with the default components (with a gold model, MIA and known times); ``results``
#: may hold more (``n/<split>``, ``gold/acc/*``, ``gold/mia/*``, ``original/acc/*``, and the optional components').
METRIC_KEYS: tuple[str, ...] = (
    *Accuracy.keys,
    *MembershipInference.keys,
    *GoldComparison.keys,
    *ZeroRetrainForgetting.keys,
    *Cost.keys,
)

#: The keys of the evaluations that look past the outputs (``probe``, ``relearn``, ``cka``), in report order.
REPRESENTATION_KEYS: tuple[str, ...] = (*LinearProbe.keys, *RelearnAttack.keys, *RepresentationCKA.keys)

#: The switches of the components that are off by default, each with the options only it reads. While a switch is
#: off these settings cannot change a result, so ``evaluator_settings`` (a benchmark row's cache key) leaves them out:
#: rows measured before they existed stay valid.
OPTIONAL_SETTINGS: dict[str, tuple[str, ...]] = {
    "probe": ("probe_forget_share", "probe_max_retain"),
    "relearn": ("relearn_samples", "relearn_seeds", "relearn_max_steps", "relearn_lr", "relearn_target"),
    "cka": (),
    "extra_components": (),
}


class EvaluatorSettings:
    """Options of :class:`~lightning_unlearn.evaluation.UnlearningEvaluator` (see its arguments) and the components
    they enable."""

    def configure(
        self,
        *,
        every_n_epochs: int,
        splits: Sequence[str],
        mia: bool,
        zrf: bool,
        plots: bool,
        output_dir: str | None,
        seed: int,
        nonmember_split: Literal["test", "holdout"],
        projection: Literal["pca", "tsne"],
        max_plot_points: int,
        unlearn_time_s: float | None,
        retrain_time_s: float | None,
        classwise_nonmembers: Literal["retained", "all"],
        entropy_max_members: int | None,
        activation_p: float,
        zrf_inits: int,
        svc_max_samples: int | None,
        probe: bool,
        probe_forget_share: float,
        probe_max_retain: int | None,
        relearn: bool,
        relearn_samples: int,
        relearn_seeds: int,
        relearn_max_steps: int,
        relearn_lr: float,
        relearn_target: float,
        cka: bool,
        extra_components: Sequence[str],
    ) -> None:
        """Store and check the options (each as the evaluator's argument of that name)."""
        Accuracy(splits)  # refuses an unknown split
        if every_n_epochs < 0:
            raise ValueError(f"every_n_epochs must be >= 0, got {every_n_epochs}.")
        if projection not in ("pca", "tsne"):
            raise ValueError(f"projection must be 'pca' or 'tsne', got {projection!r}.")
        self.every_n_epochs = int(every_n_epochs)
        self.splits = tuple(splits)
        self.mia, self.zrf, self.plots = bool(mia), bool(zrf), bool(plots)
        self.output_dir = output_dir
        self.seed = int(seed)
        self.nonmember_split = nonmember_split
        self.projection = projection
        self.max_plot_points = int(max_plot_points)
        self.unlearn_time_s, self.retrain_time_s = unlearn_time_s, retrain_time_s
        self.classwise_nonmembers = classwise_nonmembers
        self.entropy_max_members, self.svc_max_samples = entropy_max_members, svc_max_samples
        self.activation_p, self.zrf_inits = float(activation_p), int(zrf_inits)
        self.probe, self.probe_forget_share, self.probe_max_retain = bool(probe), probe_forget_share, probe_max_retain
        self.relearn, self.relearn_samples, self.relearn_seeds = bool(relearn), relearn_samples, relearn_seeds
        self.relearn_max_steps, self.relearn_lr, self.relearn_target = relearn_max_steps, relearn_lr, relearn_target
        self.cka = bool(cka)
        self.extra_components = tuple(extra_components)
        for optional in self._options():  # every component checks its options, whether enabled or not
            optional()
        for name in self.extra_components:
            component_class(name)

    def _options(self) -> list[Any]:
        """Builders of the configurable components (each checks its options when called)."""
        mia = dict(seed=self.seed, nonmember_split=self.nonmember_split, classwise_nonmembers=self.classwise_nonmembers,
                   entropy_max_members=self.entropy_max_members, svc_max_samples=self.svc_max_samples)
        probe = dict(seed=self.seed, forget_share=self.probe_forget_share, max_retain=self.probe_max_retain)
        relearn = dict(seed=self.seed, samples=self.relearn_samples, seeds=self.relearn_seeds,
                       max_steps=self.relearn_max_steps, lr=self.relearn_lr, target=self.relearn_target)
        return [
            lambda role="model": MembershipInference(role, **mia),
            lambda: ZeroRetrainForgetting(self.seed, self.zrf_inits),
            lambda: GoldComparison(self.activation_p),
            lambda role="model": LinearProbe(role, **probe),
            lambda role="model": RelearnAttack(role, **relearn),
        ]

    def components(self) -> list[Component]:
        """The enabled components, in the order of their keys in ``metrics.json``."""
        mia, zrf, gold, probe, relearn = self._options()
        out: list[Component] = [Accuracy(self.splits)]
        out += [mia("model")] if self.mia else []
        out += [Accuracy(REFERENCE_SPLITS, role="gold", counts=False), gold()]
        out += [mia("gold")] if self.mia else []
        out += [Accuracy(REFERENCE_SPLITS, role="original", counts=False)]
        out += [zrf()] if self.zrf else []
        out += [Cost()]
        out += [probe("model"), probe("gold")] if self.probe else []
        out += [relearn("model"), relearn("gold")] if self.relearn else []
        out += [RepresentationCKA()] if self.cka else []
        return out + [component_class(name)() for name in self.extra_components]

    def plot_settings(self) -> dict[str, Any]:
        return {"max_points": self.max_plot_points}
