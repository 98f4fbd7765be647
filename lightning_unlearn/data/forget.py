"""What to forget (:class:`ForgetSpec`) and the deterministic splits it induces (:class:`Splits`).

From a training set with labels ``y`` and a test set with labels ``y_test``:

* ``holdout``: a stratified ``holdout_fraction`` of the training set, drawn first (never from explicit forget
  indices), or the indices the user gives (their own validation split). It is never trained on: it is the validation
  set, the non-member reference for membership inference and TMU's twin data.
* ``forget`` (D_f): chosen from the rest by the spec; ``retain`` (D_r): everything else.
* ``test``: the whole test set; ``test_forget``: test samples of the forgotten classes (whole classes only, else
  empty); ``test_retain``: the rest of ``test``.

Deletion requests keep coming: request ``k`` on a model unlearned ``k - 1`` times is made with ``forgotten`` (every
sample earlier requests removed) and the holdout of the first request. Its D_f is chosen among the samples not yet
forgotten, and its D_r excludes everything forgotten so far: what the gold model of request ``k`` is trained on
(:func:`sequential_splits`).

Everything is a function of (labels, spec, holdout, seed, earlier requests): the same inputs give the same indices on
every machine, and :meth:`Splits.hashes` fingerprints them so original, gold and unlearned models can be checked to
describe the same D_f.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPLIT_NAMES: tuple[str, ...] = ("retain", "forget", "holdout", "test", "test_retain", "test_forget")
TRAIN_SPLITS: tuple[str, ...] = ("retain", "forget", "holdout")


class SplitMismatchError(RuntimeError):
    """Two objects (a checkpoint and a DataModule, or two checkpoints) describe different splits."""


@dataclass
class ForgetSpec:
    """What to forget. One mode, optionally with explicit indices on top:

    * class-wise: ``classes=[c, ...]`` -- every (non-held-out) training sample of those classes;
    * sub-class: ``classes=[c, ...], per_class=N`` -- N random samples of each listed class (as in TMU);
    * random: ``fraction=p`` -- a random fraction p of the (non-held-out) training set;
    * explicit: ``indices=[i, ...]`` or ``indices_file="path"`` (a JSON list, or whitespace/comma separated integers).

    Explicit indices combine with the other modes (``mode == "combined"``): ``ForgetSpec(classes=[3],
    indices=[...])`` forgets class 3 and those samples, e.g. one deletion request naming a class and some users' data.
    """

    classes: list[int] | None = None
    per_class: int | None = None
    fraction: float | None = None
    indices: list[int] | None = None
    indices_file: str | None = None

    def __post_init__(self) -> None:
        if self.classes is not None:
            self.classes = _integers(self.classes, "`classes`")
        if self.indices is not None:
            self.indices = _integers(self.indices, "`indices`")
        self.validate()

    @property
    def has_indices(self) -> bool:
        return self.indices is not None or self.indices_file is not None

    @property
    def base_mode(self) -> str:
        """The mode without the explicit indices: ``classwise``, ``subclass``, ``random`` or ``indices`` (none)."""
        if self.classes is not None:
            return "subclass" if self.per_class is not None else "classwise"
        if self.fraction is not None:
            return "random"
        return "indices"

    @property
    def mode(self) -> str:
        """``classwise``, ``subclass``, ``random``, ``indices``, or ``combined`` (explicit indices and another mode)."""
        base = self.base_mode
        return "combined" if base != "indices" and self.has_indices else base

    def validate(self) -> None:
        if self.classes is not None and self.fraction is not None or self.indices is not None and self.indices_file:
            raise ValueError(
                "ForgetSpec needs exactly one mode: `classes` (optionally with `per_class`) or `fraction`, explicit "
                f"indices on top given by one of `indices`/`indices_file`; got {self.describe()}."
            )
        if self.classes is None and self.fraction is None and not self.has_indices:
            raise ValueError(
                "ForgetSpec needs exactly one mode: `classes` (optionally with `per_class`), `fraction`, or "
                f"`indices`/`indices_file` (explicit indices may also come on top of the others); got "
                f"{self.describe()}."
            )
        if self.per_class is not None and self.classes is None:
            raise ValueError("`per_class` (sub-class forgetting) needs `classes` to say which classes to sample from.")
        if self.classes is not None:
            if not self.classes:
                raise ValueError("`classes` is empty: name at least one class to forget.")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"`classes` lists a class twice: {self.classes}.")
        if self.per_class is not None and self.per_class < 1:
            raise ValueError(f"`per_class` must be >= 1, got {self.per_class}.")
        if self.fraction is not None and not 0.0 < self.fraction < 1.0:
            raise ValueError(f"`fraction` must be in (0, 1), got {self.fraction}.")
        if self.indices is not None and not self.indices:
            raise ValueError("`indices` is empty: the forget set would be empty.")

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def load_indices(self) -> np.ndarray:
        if self.indices is not None:
            return _index_array(self.indices, "`indices`")
        assert self.indices_file is not None
        return read_indices(self.indices_file, "Forget indices file", "the forget set would be empty")


def read_indices(path_like: str | Path, what: str = "Indices file", empty: str = "nothing is selected") -> np.ndarray:
    """Integer indices from a file: a JSON list, or whitespace/comma separated integers (one readable error each)."""
    path = Path(path_like)
    if path.is_dir():
        raise IsADirectoryError(
            f"{what} {path} is a directory: pass the file itself (a JSON list of integers, or whitespace/comma "
            "separated integers)."
        )
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}.")
    try:
        text = path.read_text().strip()
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not text: give a JSON list of integers.") from None
    try:
        if text.startswith("["):
            values = json.loads(text)
        else:
            tokens = text.replace(",", " ").split()
            bad = [t for t in tokens if not _INT_TOKEN.fullmatch(t)]
            if bad:
                raise ValueError(f"{bad[0]!r} is not an integer")
            values = [int(t) for t in tokens]
        values = _integers(values, f"{what} {path}")
    except ValueError as err:
        msg = str(err)
        if not msg.startswith(what):
            msg = f"Could not read integer indices from {path}: {msg}."
        raise ValueError(msg) from None
    if not values:
        raise ValueError(f"{path} holds no indices: {empty}.")
    return _index_array(values, f"{what} {path}")


def _index_array(values: list[int], what: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.int64)
    except OverflowError:  # an integer beyond int64: no dataset has such a sample
        raise ValueError(f"{what} holds {max(values, key=abs)}, which is no sample index (too large).") from None


_INT_TOKEN = re.compile(r"[+-]?\d+")


def _integers(values: Any, what: str) -> list[int]:
    """``values`` as a list of ints; floats (even 2.0), booleans, strings and nested lists are refused, not cast."""
    if not isinstance(values, (list, tuple, np.ndarray)):
        raise ValueError(f"{what} must be a list of integers, got {type(values).__name__}.")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ValueError(
                f"{what} must hold only integers; found {v!r} ({type(v).__name__}). Write sample indices as whole "
                "numbers, e.g. [12, 40, 7]."
            )
        out.append(int(v))
    return out


@dataclass
class Splits:
    """Index sets: ``retain``/``forget``/``holdout`` index the training set, ``test*`` the test set."""

    retain: np.ndarray
    forget: np.ndarray
    holdout: np.ndarray
    test: np.ndarray
    test_retain: np.ndarray
    test_forget: np.ndarray
    forget_classes: list[int] = field(default_factory=list)
    #: Training samples earlier deletion requests removed (neither in D_f nor in D_r); empty for a first request.
    forgotten: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    #: Whole classes earlier requests removed (their test samples are in neither ``test_retain`` nor ``test_forget``).
    forgotten_classes: list[int] = field(default_factory=list)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in (*SPLIT_NAMES, "forgotten"):
            raise KeyError(f"Unknown split {name!r}; choose from {', '.join(SPLIT_NAMES)}, forgotten.")
        return getattr(self, name)

    @property
    def names(self) -> tuple[str, ...]:
        """The split names, with ``forgotten`` after a first request."""
        return (*SPLIT_NAMES, "forgotten") if len(self.forgotten) else SPLIT_NAMES

    def sizes(self) -> dict[str, int]:
        return {name: int(len(self[name])) for name in self.names}

    def hashes(self) -> dict[str, str]:
        """sha256 of each sorted index set (int64, little endian)."""
        return {name: index_hash(self[name]) for name in self.names}

    @property
    def cumulative_forget(self) -> np.ndarray:
        """Everything forgotten once this request is done: earlier requests' samples and D_f (sorted)."""
        return np.union1d(self.forgotten, self.forget).astype(np.int64)

    def to_dict(self, spec: ForgetSpec | None = None, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "forget_spec": spec.describe() if spec is not None else None,
            "forget_classes": list(self.forget_classes),
            "sizes": self.sizes(),
            "hashes": self.hashes(),
            "forget_indices": [int(i) for i in np.sort(self.forget)],
            "holdout_indices": [int(i) for i in np.sort(self.holdout)],
        }
        if len(self.forgotten):
            out["forgotten_classes"] = list(self.forgotten_classes)
        out.update(extra)
        return out

    def save(self, path: str | Path, spec: ForgetSpec | None = None, **extra: Any) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(spec, **extra), indent=1))
        return path


def index_hash(indices: np.ndarray) -> str:
    data = np.sort(np.asarray(indices, dtype="<i8")).tobytes()
    return hashlib.sha256(data).hexdigest()


def check_hashes(
    expected: dict[str, str], actual: dict[str, str], *, names: Sequence[str], what: str, against: str
) -> None:
    """Raise :class:`SplitMismatchError` naming both hashes of the first split that differs (D_f checked first)."""
    for name in sorted(names, key=lambda n: n != "forget"):
        if name in expected and name in actual and expected[name] != actual[name]:
            raise SplitMismatchError(
                f"The {name!r} split of {what} does not match {against}: sha256 {expected[name][:16]}... vs "
                f"{actual[name][:16]}... (full: {expected[name]} vs {actual[name]}). They describe different "
                "forget/retain sets; use the same dataset, `forget` spec, `holdout_fraction` and `seed` that "
                "produced the checkpoint."
            )


def make_splits(
    train_targets: Sequence[int] | np.ndarray,
    test_targets: Sequence[int] | np.ndarray,
    spec: ForgetSpec | None,
    *,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    num_classes: int | None = None,
    holdout: Sequence[int] | np.ndarray | None = None,
    forgotten: Sequence[int] | np.ndarray | None = None,
    forgotten_classes: Sequence[int] = (),
    request: int = 1,
) -> Splits:
    """Compute the splits. ``spec=None`` means nothing is forgotten (D_f empty), e.g. for plain training.

    Args:
        holdout: the held-out (never trained on) training indices, e.g. the user's own validation split; default: a
            stratified ``holdout_fraction`` drawn with ``seed``.
        forgotten, forgotten_classes: what earlier deletion requests removed (samples; whole classes), for request
            number ``request`` (> 1) on an unlearned model. D_f is drawn from the rest with ``(seed, request)``.
    """
    y = np.asarray(train_targets, dtype=np.int64)
    y_test = np.asarray(test_targets, dtype=np.int64)
    n = len(y)
    if n == 0:
        raise ValueError("The training set is empty.")
    if num_classes is None:
        num_classes = int(max(y.max(), y_test.max() if len(y_test) else 0)) + 1
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"`holdout_fraction` must be in [0, 1), got {holdout_fraction}.")
    rng = np.random.default_rng(seed if request <= 1 else [seed, request])
    gone = _index_set(forgotten, n, "Already forgotten indices") if forgotten is not None else _empty()

    explicit = None
    if spec is not None and spec.has_indices:
        explicit = _index_set(spec.load_indices(), n, "Forget indices")
        again = np.intersect1d(explicit, gone)
        if len(again):
            raise ValueError(
                f"Forget indices {again[:10].tolist()}{' ...' if len(again) > 10 else ''} were forgotten by an earlier "
                "request already; name only samples the model still holds."
            )
    if spec is not None and spec.classes is not None:
        unknown = [c for c in spec.classes if not 0 <= c < num_classes]
        if unknown:
            raise ValueError(f"Unknown class id(s) {unknown}: this dataset has classes 0..{num_classes - 1}.")

    # 1. the holdout: the user's, or stratified and never from explicit forget indices (nor forgotten samples)
    if holdout is not None:
        held = _index_set(holdout, n, "Holdout indices")
        clash = np.intersect1d(held, explicit) if explicit is not None else _empty()
        if len(clash):
            raise ValueError(
                f"Forget indices {clash[:10].tolist()} are in the holdout (held-out samples, never trained on): there "
                "is nothing to forget about them; drop them from the forget set."
            )
        if len(np.intersect1d(held, gone)):
            raise ValueError(
                "The holdout overlaps the samples earlier requests forgot; give the first request's holdout."
            )
    else:
        pool = np.ones(n, dtype=bool)
        pool[gone] = False
        if explicit is not None:
            pool[explicit] = False
        held = _stratified_sample(np.flatnonzero(pool), y, holdout_fraction, rng)
    available = np.ones(n, dtype=bool)
    available[held] = False
    available[gone] = False

    # 2. the forget set: the spec's mode among the available samples, plus the explicit indices
    forget_classes: list[int] = []
    candidates = available.copy()
    if explicit is not None:
        candidates[explicit] = False
    mode = spec.base_mode if spec is not None else None
    if spec is None:
        forget = _empty()
    elif mode == "classwise":
        forget_classes = sorted(spec.classes or [])
        forget = np.flatnonzero(candidates & np.isin(y, forget_classes))
    elif mode == "subclass":
        parts = []
        for c in spec.classes or []:
            members = np.flatnonzero(candidates & (y == c))
            if spec.per_class is not None and spec.per_class > len(members):
                raise ValueError(
                    f"`per_class={spec.per_class}` is larger than class {c}, which has {len(members)} training samples "
                    f"outside the holdout."
                )
            if spec.per_class == len(members):
                raise ValueError(
                    f"`per_class={spec.per_class}` would forget every retained sample of class {c}; use class-wise "
                    f"forgetting (`classes` without `per_class`) for that, or a smaller `per_class`."
                )
            parts.append(rng.choice(members, size=spec.per_class, replace=False))
        forget = np.concatenate(parts)
    elif mode == "random":
        pool_idx = np.flatnonzero(candidates)
        k = int(round(float(spec.fraction or 0.0) * len(pool_idx)))
        if k == 0:
            raise ValueError(
                f"`fraction={spec.fraction}` of {len(pool_idx)} training samples selects nothing to forget."
            )
        forget = rng.choice(pool_idx, size=k, replace=False)
    else:
        forget = _empty()
    if explicit is not None:
        forget = np.union1d(forget, explicit)
    forget = np.sort(forget.astype(np.int64))
    if spec is not None and len(forget) == 0:
        already = " (every sample it names was forgotten by an earlier request)" if len(gone) else ""
        raise ValueError(
            f"The forget spec {spec.describe()} selects no training sample{already}: the forget set is empty."
        )

    in_forget = np.zeros(n, dtype=bool)
    in_forget[forget] = True
    retain = np.flatnonzero(available & ~in_forget)
    if spec is not None and len(retain) == 0:
        raise ValueError(
            f"The forget spec {spec.describe()} leaves the retained set D_r empty (it forgets every training sample "
            "outside the holdout): there is nothing to retain, train the gold model on, or measure retained accuracy "
            "with. Forget fewer classes/samples."
        )
    if spec is not None and mode != "classwise" or explicit is not None:
        whole = set(forget_classes) | {int(c) for c in forgotten_classes}
        lost = sorted(set(np.unique(y[forget]).tolist()) - set(np.unique(y[retain]).tolist()) - whole)
        if lost:
            raise ValueError(
                f"The forget set {spec.describe() if spec else {}} would leave class(es) {lost} with no retained "
                "training sample; use class-wise forgetting (`classes=[...]`) to remove whole classes."
            )

    test = np.arange(len(y_test), dtype=np.int64)
    test_forget_mask = np.isin(y_test, forget_classes) if forget_classes else np.zeros(len(y_test), dtype=bool)
    test_gone = np.isin(y_test, list(forgotten_classes)) if len(forgotten_classes) else np.zeros(len(y_test), bool)
    return Splits(
        retain=retain.astype(np.int64),
        forget=forget,
        holdout=np.sort(held).astype(np.int64),
        test=test,
        test_retain=test[~test_forget_mask & ~test_gone],
        test_forget=test[test_forget_mask],
        forget_classes=forget_classes,
        forgotten=gone,
        forgotten_classes=sorted(int(c) for c in forgotten_classes),
    )


def sequential_splits(
    train_targets: Sequence[int] | np.ndarray,
    test_targets: Sequence[int] | np.ndarray,
    specs: Sequence[ForgetSpec],
    **kwargs: Any,
) -> list[Splits]:
    """The splits of successive deletion requests ``specs`` on one model (``kwargs`` as for :func:`make_splits`).

    Request 1 draws (or takes) the holdout; request ``k`` keeps it, forgets among the samples the earlier ones left,
    and its ``retain`` is what the gold model of request ``k`` is trained on (``cumulative_forget`` left out).
    """
    out: list[Splits] = []
    for k, spec in enumerate(specs, start=1):
        if out:
            last = out[-1]
            kwargs = {
                **kwargs,
                "holdout": last.holdout,
                "forgotten": last.cumulative_forget,
                "forgotten_classes": sorted(set(last.forgotten_classes) | set(last.forget_classes)),
            }
        out.append(make_splits(train_targets, test_targets, spec, request=k, **kwargs))
    return out


def _empty() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


def _index_set(values: Sequence[int] | np.ndarray, n: int, what: str) -> np.ndarray:
    """``values`` as sorted int64 training indices, refusing ones out of range and duplicates."""
    idx = np.asarray(values, dtype=np.int64).reshape(-1)
    bad = idx[(idx < 0) | (idx >= n)]
    if len(bad):
        raise IndexError(
            f"{what} out of range for a training set of {n} samples (valid: 0..{n - 1}): "
            f"{bad[:10].tolist()}{' ...' if len(bad) > 10 else ''}."
        )
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{what} contain duplicates: {uniq[counts > 1][:10].tolist()}.")
    return uniq


def _stratified_sample(candidates: np.ndarray, y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    if fraction <= 0 or len(candidates) == 0:
        return np.empty(0, dtype=np.int64)
    picked = []
    for c in np.unique(y[candidates]):
        members = candidates[y[candidates] == c]
        k = int(round(fraction * len(members)))
        k = min(k, len(members) - 1)  # keep at least one training sample of every class
        if k > 0:
            picked.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


def stratified_split(
    targets: Sequence[int] | np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(targets))`` into (rest, part) with ``part`` a stratified ``fraction`` (for datasets that
    ship without a test split)."""
    y = np.asarray(targets, dtype=np.int64)
    part = _stratified_sample(np.arange(len(y)), y, fraction, np.random.default_rng(seed))
    mask = np.ones(len(y), dtype=bool)
    mask[part] = False
    return np.flatnonzero(mask), part
