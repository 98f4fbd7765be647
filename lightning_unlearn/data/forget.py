"""What to forget (:class:`ForgetSpec`) and the deterministic splits it induces (:class:`Splits`).

From a training set with labels ``y`` and a test set with labels ``y_test``:

* ``holdout``: a stratified ``holdout_fraction`` of the training set, drawn first (never from explicit forget
  indices). It is never trained on: it is the validation set, the non-member reference for membership inference and
  TMU's twin data.
* ``forget`` (D_f): chosen from the rest by the spec's mode; ``retain`` (D_r): everything else.
* ``test``: the whole test set; ``test_forget``: test samples of the forgotten classes (class-wise mode only, else
  empty); ``test_retain``: the rest of ``test``.

Everything is a function of (labels, spec, holdout_fraction, seed): the same inputs give the same indices on every
machine, and :meth:`Splits.hashes` fingerprints them so original, gold and unlearned models can be checked to describe
the same D_f.
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
    """What to forget. Exactly one mode:

    * class-wise: ``classes=[c, ...]`` -- every (non-held-out) training sample of those classes;
    * sub-class: ``classes=[c, ...], per_class=N`` -- N random samples of each listed class (as in TMU);
    * random: ``fraction=p`` -- a random fraction p of the (non-held-out) training set;
    * explicit: ``indices=[i, ...]`` or ``indices_file="path"`` (a JSON list, or whitespace/comma separated integers).
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
    def mode(self) -> str:
        if self.classes is not None:
            return "subclass" if self.per_class is not None else "classwise"
        if self.fraction is not None:
            return "random"
        return "indices"

    def validate(self) -> None:
        modes = [
            self.classes is not None,
            self.fraction is not None,
            self.indices is not None or self.indices_file is not None,
        ]
        if sum(modes) != 1 or (self.indices is not None and self.indices_file is not None):
            raise ValueError(
                "ForgetSpec needs exactly one mode: `classes` (optionally with `per_class`), `fraction`, or "
                f"`indices`/`indices_file`; got {self.describe()}."
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
        path = Path(self.indices_file)
        if path.is_dir():
            raise IsADirectoryError(
                f"Forget indices file {path} is a directory: pass the file itself (a JSON list of integers, or "
                "whitespace/comma separated integers)."
            )
        if not path.is_file():
            raise FileNotFoundError(f"Forget indices file not found: {path}.")
        try:
            text = path.read_text().strip()
        except UnicodeDecodeError:
            raise ValueError(f"Forget indices file {path} is not text: give a JSON list of integers.") from None
        try:
            if text.startswith("["):
                values = json.loads(text)
            else:
                tokens = text.replace(",", " ").split()
                bad = [t for t in tokens if not _INT_TOKEN.fullmatch(t)]
                if bad:
                    raise ValueError(f"{bad[0]!r} is not an integer")
                values = [int(t) for t in tokens]
            values = _integers(values, f"Forget indices file {path}")
        except ValueError as err:
            msg = str(err)
            if not msg.startswith("Forget indices file"):
                msg = f"Could not read integer indices from {path}: {msg}."
            raise ValueError(msg) from None
        if not values:
            raise ValueError(f"{path} holds no indices: the forget set would be empty.")
        return _index_array(values, f"Forget indices file {path}")


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

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in SPLIT_NAMES:
            raise KeyError(f"Unknown split {name!r}; choose from {', '.join(SPLIT_NAMES)}.")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {name: int(len(self[name])) for name in SPLIT_NAMES}

    def hashes(self) -> dict[str, str]:
        """sha256 of each sorted index set (int64, little endian)."""
        return {name: index_hash(self[name]) for name in SPLIT_NAMES}

    def to_dict(self, spec: ForgetSpec | None = None, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "forget_spec": spec.describe() if spec is not None else None,
            "forget_classes": list(self.forget_classes),
            "sizes": self.sizes(),
            "hashes": self.hashes(),
            "forget_indices": [int(i) for i in np.sort(self.forget)],
            "holdout_indices": [int(i) for i in np.sort(self.holdout)],
        }
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
) -> Splits:
    """Compute the splits. ``spec=None`` means nothing is forgotten (D_f empty), e.g. for plain training."""
    y = np.asarray(train_targets, dtype=np.int64)
    y_test = np.asarray(test_targets, dtype=np.int64)
    n = len(y)
    if n == 0:
        raise ValueError("The training set is empty.")
    if num_classes is None:
        num_classes = int(max(y.max(), y_test.max() if len(y_test) else 0)) + 1
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"`holdout_fraction` must be in [0, 1), got {holdout_fraction}.")
    rng = np.random.default_rng(seed)

    explicit = None
    if spec is not None and spec.mode == "indices":
        explicit = spec.load_indices()
        bad = explicit[(explicit < 0) | (explicit >= n)]
        if len(bad):
            raise IndexError(
                f"Forget indices out of range for a training set of {n} samples (valid: 0..{n - 1}): "
                f"{bad[:10].tolist()}{' ...' if len(bad) > 10 else ''}."
            )
        uniq, counts = np.unique(explicit, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"Forget indices contain duplicates: {uniq[counts > 1][:10].tolist()}.")
    if spec is not None and spec.classes is not None:
        unknown = [c for c in spec.classes if not 0 <= c < num_classes]
        if unknown:
            raise ValueError(f"Unknown class id(s) {unknown}: this dataset has classes 0..{num_classes - 1}.")

    # 1. stratified holdout, never from explicit forget indices
    pool = np.ones(n, dtype=bool)
    if explicit is not None:
        pool[explicit] = False
    holdout = _stratified_sample(np.flatnonzero(pool), y, holdout_fraction, rng)
    available = np.ones(n, dtype=bool)
    available[holdout] = False

    # 2. the forget set
    forget_classes: list[int] = []
    if spec is None:
        forget = np.empty(0, dtype=np.int64)
    elif spec.mode == "classwise":
        forget_classes = sorted(spec.classes or [])
        forget = np.flatnonzero(available & np.isin(y, forget_classes))
    elif spec.mode == "subclass":
        parts = []
        for c in spec.classes or []:
            members = np.flatnonzero(available & (y == c))
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
    elif spec.mode == "random":
        candidates = np.flatnonzero(available)
        k = int(round(float(spec.fraction or 0.0) * len(candidates)))
        if k == 0:
            raise ValueError(
                f"`fraction={spec.fraction}` of {len(candidates)} training samples selects nothing to forget."
            )
        forget = rng.choice(candidates, size=k, replace=False)
    else:
        assert explicit is not None
        forget = explicit
    forget = np.sort(forget.astype(np.int64))
    if spec is not None and len(forget) == 0:
        raise ValueError(f"The forget spec {spec.describe()} selects no training sample: the forget set is empty.")

    in_forget = np.zeros(n, dtype=bool)
    in_forget[forget] = True
    retain = np.flatnonzero(available & ~in_forget)
    if spec is not None and len(retain) == 0:
        raise ValueError(
            f"The forget spec {spec.describe()} leaves the retained set D_r empty (it forgets every training sample "
            "outside the holdout): there is nothing to retain, train the gold model on, or measure retained accuracy "
            "with. Forget fewer classes/samples."
        )
    if spec is not None and spec.mode in ("subclass", "random", "indices"):
        lost = sorted(set(np.unique(y[forget]).tolist()) - set(np.unique(y[retain]).tolist()))
        if lost:
            raise ValueError(
                f"The forget set {spec.describe()} would leave class(es) {lost} with no retained training sample; "
                "use class-wise forgetting (`classes=[...]`) to remove whole classes."
            )

    test = np.arange(len(y_test), dtype=np.int64)
    test_forget_mask = np.isin(y_test, forget_classes) if forget_classes else np.zeros(len(y_test), dtype=bool)
    return Splits(
        retain=retain.astype(np.int64),
        forget=forget,
        holdout=np.sort(holdout).astype(np.int64),
        test=test,
        test_retain=test[~test_forget_mask],
        test_forget=test[test_forget_mask],
        forget_classes=forget_classes,
    )


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
