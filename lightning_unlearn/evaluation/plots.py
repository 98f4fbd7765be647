"""Plots of an unlearning run, as pure functions on arrays (matplotlib, Agg backend, PNG files).

* :func:`plot_decision_space` -- 2-D projection (PCA, or t-SNE) of penultimate features of D_f and test samples,
  coloured by predicted class, one panel per model (original | unlearned | gold), as in the decision-space figures of
  Chen et al. 2023, "Boundary Unlearning".
* :func:`plot_per_class_accuracy` -- grouped bars of per-class accuracy before and after unlearning (and of the gold
  model when given).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

Projection = Literal["pca", "tsne"]

__all__ = ["PanelData", "plot_data", "plot_decision_space", "plot_per_class_accuracy", "project_2d", "write_plots"]


def _figure(**kwargs: object):  # type: ignore[no-untyped-def]
    # A bare Figure renders with the Agg canvas on savefig: no pyplot, no global backend switch, no window, so it works
    # headless, under DDP workers, and without touching a notebook user's backend.
    from matplotlib.figure import Figure

    return Figure(**kwargs)  # type: ignore[arg-type]


def project_2d(features: np.ndarray, method: Projection = "pca", seed: int = 0) -> np.ndarray:
    """Project ``(N, D)`` features to ``(N, 2)``: ``"pca"`` (sklearn ``PCA``) or ``"tsne"`` (sklearn ``TSNE``, PCA
    initialisation, perplexity ``min(30, (N - 1) / 3)``). Both are seeded."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"Expected (N, D) features, got shape {x.shape}.")
    n = len(x)
    if n == 0:
        return np.zeros((0, 2))
    if n == 1 or x.shape[1] == 1:
        out = np.zeros((n, 2))
        out[:, 0] = x[:, 0] - x[:, 0].mean()
        return out
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(max(1.0, min(30.0, (n - 1) / 3.0)))
        return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)
    raise ValueError(f"Unknown projection {method!r}; choose 'pca' or 'tsne'.")


class PanelData:
    """One model's panel: penultimate ``features`` ``(N, D)`` and ``preds`` ``(N,)`` on the plotted samples."""

    def __init__(self, title: str, features: np.ndarray, preds: np.ndarray) -> None:
        self.title = title
        self.features = np.asarray(features)
        self.preds = np.asarray(preds).astype(np.int64)
        if len(self.features) != len(self.preds):
            raise ValueError(f"{title}: {len(self.features)} feature rows but {len(self.preds)} predictions.")


def plot_decision_space(
    panels: Sequence[PanelData],
    is_forget: np.ndarray,
    path: str | Path,
    *,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    method: Projection = "pca",
    seed: int = 0,
) -> Path:
    """Decision space of each model side by side.

    The features of all panels are projected once, together (:func:`project_2d` on their concatenation, so one PCA
    basis or one t-SNE embedding), and the panels share their axes: a position means the same in every panel, and a
    sample that moves between panels moved in feature space. (Panels whose feature sizes differ cannot share a basis:
    each is then projected alone, and the title says so.) Points are coloured by the model's predicted class; D_f
    samples are crosses, test samples dots. After a good unlearning the forgotten samples move out of their old cluster
    into the regions of other classes, as for the gold model.

    Args:
        panels: one :class:`PanelData` per model, all on the same samples in the same order.
        is_forget: ``(N,)`` bool, True for D_f samples (False: test samples).
        path: the PNG to write.
        num_classes: number of classes (colour map size); class_names: legend labels.
        method: ``"pca"`` or ``"tsne"``; seed: projection seed.

    Returns:
        ``path``.
    """
    import matplotlib
    from matplotlib.lines import Line2D

    is_forget = np.asarray(is_forget, dtype=bool)
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if num_classes <= 20:
        cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
        colours = [cmap(c) for c in range(num_classes)]
    else:
        cmap = matplotlib.colormaps["viridis"]
        colours = [cmap(c / (num_classes - 1)) for c in range(num_classes)]
    for panel in panels:
        if len(panel.preds) != len(is_forget):
            raise ValueError(f"{panel.title}: {len(panel.preds)} samples but is_forget has {len(is_forget)}.")
    shared = len({p.features.shape[1:] for p in panels}) == 1
    if shared:
        joint = project_2d(np.concatenate([p.features for p in panels]), method, seed)
        projected = np.split(joint, np.cumsum([len(p.features) for p in panels])[:-1])
    else:
        projected = [project_2d(p.features, method, seed) for p in panels]
    fig = _figure(figsize=(5.2 * len(panels) + 1.5, 4.8))
    axes = fig.subplots(1, len(panels), squeeze=False, sharex=shared, sharey=shared)
    for ax, panel, xy in zip(axes[0], panels, projected, strict=True):
        colour = np.array([colours[int(c) % len(colours)] for c in panel.preds]).reshape(-1, 4)
        test = ~is_forget
        ax.scatter(xy[test, 0], xy[test, 1], c=colour[test], s=8, marker="o", alpha=0.5, linewidths=0)
        ax.scatter(xy[is_forget, 0], xy[is_forget, 1], c=colour[is_forget], s=28, marker="x", linewidths=1.0)
        ax.set_title(panel.title)
        ax.set_xticks([])
        ax.set_yticks([])
    present = sorted({int(c) for p in panels for c in p.preds})
    handles = [
        Line2D([], [], marker="o", linestyle="", color=colours[c % len(colours)], label=names[c])
        for c in present
        if c < len(names)
    ]
    handles += [
        Line2D([], [], marker="x", linestyle="", color="black", label="D_f (forget)"),
        Line2D([], [], marker="o", linestyle="", color="black", alpha=0.5, label="test"),
    ]
    fig.legend(handles=handles, loc="center right", fontsize=8, title="predicted class")
    how = "one projection for all panels" if shared else "each panel projected alone: feature sizes differ"
    fig.suptitle(f"Decision space ({method.upper()} of penultimate features, {how})")
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_per_class_accuracy(
    accuracies: dict[str, np.ndarray],
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    forget_classes: Sequence[int] = (),
    title: str = "Per-class test accuracy",
) -> Path:
    """Grouped bar chart of per-class accuracy, one bar group per class and one bar per model.

    Args:
        accuracies: ``{"original": (C,) array, "unlearned": (C,) array, ...}`` in [0, 1] (``nan``: no sample).
        path: the PNG to write.
        class_names: tick labels; forget_classes: classes marked with ``*`` (class-wise forgetting).

    Returns:
        ``path``.
    """
    if not accuracies:
        raise ValueError("No accuracies to plot.")
    labels = list(accuracies)
    arrays = [np.asarray(accuracies[k], dtype=np.float64) for k in labels]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("Every model needs one accuracy per class.")
    names = list(class_names) if class_names is not None else [str(c) for c in range(n)]
    ticks = [f"{names[c]}*" if c in set(forget_classes) else names[c] for c in range(n)]
    width = 0.8 / len(arrays)
    fig = _figure(figsize=(min(24.0, max(6.0, 2.0 + 0.25 * n * len(arrays))), 4.0))
    ax = fig.subplots()
    x = np.arange(n)
    for i, (label, acc) in enumerate(zip(labels, arrays, strict=True)):
        ax.bar(x + (i - (len(arrays) - 1) / 2) * width, np.nan_to_num(acc, nan=0.0), width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(ticks, rotation=90 if n > 20 else 0)
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("class" + (" (* forgotten)" if forget_classes else ""))
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, title="model")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


_PANELS = (("original", "original"), ("model", "unlearned"), ("gold", "gold (retrained)"))
_BARS = (("original", "original"), ("model", "unlearned"), ("gold", "gold"))


def plot_data(outputs: Mapping[tuple[str, str], Any], num_classes: int, max_points: int, seed: int) -> dict[str, Any]:
    """What the two plots draw, from the evaluation's outputs ``{(role, split): Outputs}`` (roles ``original``,
    ``model``, ``gold``; D_f and test with features): at most ``max_points`` test and half as many D_f points (a seeded
    subsample shared by every panel), the features and predictions per model, and per-class test accuracy."""
    from lightning_unlearn.evaluation.metrics import per_class_accuracy

    rng = np.random.default_rng(seed)

    def pick(count: int, limit: int) -> np.ndarray:
        return np.sort(rng.choice(count, size=limit, replace=False)) if count > limit else np.arange(count)

    f_pos = pick(len(outputs[("model", "forget")]), max(1, max_points // 2))
    t_pos = pick(len(outputs[("model", "test")]), max_points)
    data: dict[str, Any] = {"panels": [], "per_class": {}}
    data["is_forget"] = np.concatenate([np.ones(len(f_pos), bool), np.zeros(len(t_pos), bool)])
    for name, title in _PANELS:
        f, t = outputs.get((name, "forget")), outputs.get((name, "test"))
        if f is None or t is None or f.features is None or t.features is None:
            continue
        feats = np.concatenate([f.features[f_pos].cpu().numpy(), t.features[t_pos].cpu().numpy()])
        preds = np.concatenate([f.logits[f_pos].argmax(1).cpu().numpy(), t.logits[t_pos].argmax(1).cpu().numpy()])
        data["panels"].append((title, feats, preds))
    for name, label in _BARS:
        t = outputs.get((name, "test"))
        if t is not None:
            data["per_class"][label] = per_class_accuracy(t.logits, t.targets, num_classes)
    return data


def write_plots(data: dict[str, Any], out_dir: Path, dm: Any, projection: Projection, seed: int) -> list[Path]:
    """Draw :func:`plot_data`'s result into ``decision_space.png`` and ``per_class_accuracy.png``; returns the files."""
    written = []
    names = list(getattr(dm, "class_names", [])) or None
    forget_classes = list(getattr(dm.splits, "forget_classes", []) or [])
    if data["panels"]:
        panels = [PanelData(title, f, p) for title, f, p in data["panels"]]
        written.append(
            plot_decision_space(
                panels, data["is_forget"], out_dir / "decision_space.png", num_classes=int(dm.num_classes),
                class_names=names, method=projection, seed=seed,
            )
        )
    if data["per_class"]:
        written.append(
            plot_per_class_accuracy(
                data["per_class"], out_dir / "per_class_accuracy.png", class_names=names, forget_classes=forget_classes
            )
        )
    return written
