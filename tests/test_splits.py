"""ForgetSpec modes, split disjointness/coverage, determinism, hashes and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lightning_unlearn.data import ForgetSpec, SplitMismatchError, make_splits
from lightning_unlearn.data.forget import SPLIT_NAMES, check_hashes, index_hash, stratified_split

rng = np.random.default_rng(0)
Y = np.repeat(np.arange(5), 40)  # 200 training samples, 40 per class
Y_TEST = np.repeat(np.arange(5), 10)

SPECS = {
    "classwise": ForgetSpec(classes=[1, 3]),
    "subclass": ForgetSpec(classes=[2], per_class=10),
    "random": ForgetSpec(fraction=0.1),
    "indices": ForgetSpec(indices=[0, 5, 50, 199]),
}


@pytest.mark.parametrize("mode", list(SPECS))
def test_splits_are_disjoint_and_cover_the_training_set(mode):
    s = make_splits(Y, Y_TEST, SPECS[mode], holdout_fraction=0.1, seed=1)
    assert SPECS[mode].mode == mode
    parts = [s.retain, s.forget, s.holdout]
    allidx = np.concatenate(parts)
    assert len(allidx) == len(np.unique(allidx)) == len(Y)  # disjoint and covering
    assert len(s.forget) > 0
    assert np.array_equal(np.sort(np.concatenate([s.test_retain, s.test_forget])), s.test)
    assert len(np.intersect1d(s.test_retain, s.test_forget)) == 0


def test_modes_select_what_they_say():
    s = make_splits(Y, Y_TEST, SPECS["classwise"], holdout_fraction=0.1, seed=0)
    assert set(Y[s.forget]) == {1, 3}
    assert not np.isin(Y[s.retain], [1, 3]).any()  # every non-held-out sample of the classes is forgotten
    assert set(Y_TEST[s.test_forget]) == {1, 3} and len(s.test_forget) == 20
    assert s.forget_classes == [1, 3]

    s = make_splits(Y, Y_TEST, SPECS["subclass"], holdout_fraction=0.1, seed=0)
    assert len(s.forget) == 10 and set(Y[s.forget]) == {2}
    assert (Y[s.retain] == 2).sum() == 40 - 4 - 10  # 4 held out
    assert len(s.test_forget) == 0  # empty unless class-wise

    s = make_splits(Y, Y_TEST, SPECS["random"], holdout_fraction=0.1, seed=0)
    assert len(s.forget) == round(0.1 * (200 - 20))

    s = make_splits(Y, Y_TEST, SPECS["indices"], holdout_fraction=0.1, seed=0)
    assert s.forget.tolist() == [0, 5, 50, 199]
    assert not np.isin(s.holdout, s.forget).any()  # holdout never takes explicit forget indices


def test_holdout_is_stratified():
    s = make_splits(Y, Y_TEST, None, holdout_fraction=0.25, seed=0)
    assert np.bincount(Y[s.holdout]).tolist() == [10] * 5
    assert len(s.forget) == 0


def test_indices_file(tmp_path):
    f = tmp_path / "forget.json"
    f.write_text(json.dumps([3, 4, 7]))
    s = make_splits(Y, Y_TEST, ForgetSpec(indices_file=str(f)), seed=0)
    assert s.forget.tolist() == [3, 4, 7]
    g = tmp_path / "forget.txt"
    g.write_text("3 4\n7")
    assert make_splits(Y, Y_TEST, ForgetSpec(indices_file=str(g)), seed=0).forget.tolist() == [3, 4, 7]


@pytest.mark.parametrize("mode", list(SPECS))
def test_deterministic_from_seed(mode):
    a = make_splits(Y, Y_TEST, SPECS[mode], seed=7)
    b = make_splits(Y, Y_TEST, SPECS[mode], seed=7)
    c = make_splits(Y, Y_TEST, SPECS[mode], seed=8)
    assert a.hashes() == b.hashes()
    for name in SPLIT_NAMES:
        assert np.array_equal(a[name], b[name])
    assert a.hashes()["holdout"] != c.hashes()["holdout"]


def test_hash_is_order_independent_and_check_names_both_hashes():
    assert index_hash(np.array([3, 1, 2])) == index_hash(np.array([1, 2, 3]))
    a = make_splits(Y, Y_TEST, SPECS["random"], seed=0).hashes()
    b = make_splits(Y, Y_TEST, SPECS["random"], seed=1).hashes()
    check_hashes(a, a, names=SPLIT_NAMES, what="x", against="y")
    with pytest.raises(SplitMismatchError) as err:
        check_hashes(a, b, names=SPLIT_NAMES, what="the checkpoint", against="this DataModule")
    assert a["forget"] in str(err.value) and b["forget"] in str(err.value)


def test_save_writes_json_with_hashes(tmp_path):
    s = make_splits(Y, Y_TEST, SPECS["subclass"], seed=0)
    info = json.loads(s.save(tmp_path / "splits.json", SPECS["subclass"]).read_text())
    assert info["hashes"] == s.hashes()
    assert info["forget_spec"] == {"classes": [2], "per_class": 10}
    assert info["sizes"]["forget"] == 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one mode"),
        ({"classes": [1], "fraction": 0.1}, "exactly one mode"),
        ({"indices": [1], "indices_file": "x"}, "exactly one mode"),
        ({"per_class": 3}, "exactly one mode|needs `classes`"),
        ({"classes": []}, "empty"),
        ({"classes": [1, 1]}, "twice"),
        ({"classes": [1], "per_class": 0}, ">= 1"),
        ({"fraction": 1.5}, r"\(0, 1\)"),
        ({"indices": []}, "empty"),
    ],
)
def test_bad_specs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ForgetSpec(**kwargs)


@pytest.mark.parametrize(
    "spec, error, match",
    [
        (ForgetSpec(classes=[9]), ValueError, r"Unknown class id\(s\) \[9\].*0\.\.4"),
        (ForgetSpec(classes=[2], per_class=1000), ValueError, "larger than class 2"),
        (ForgetSpec(classes=[2], per_class=36), ValueError, "every retained sample of class 2"),
        (ForgetSpec(indices=[0, 200]), IndexError, "out of range.*0..199"),
        (ForgetSpec(indices=[-1]), IndexError, "out of range"),
        (ForgetSpec(indices=[4, 4]), ValueError, "duplicates"),
        (ForgetSpec(indices=list(range(40))), ValueError, r"class\(es\) \[0\] with no retained"),
        (ForgetSpec(fraction=0.001), ValueError, "selects nothing"),
        (ForgetSpec(indices_file="/nonexistent/forget.txt"), FileNotFoundError, "not found"),
    ],
)
def test_bad_inputs_are_clear_errors(spec, error, match):
    with pytest.raises(error, match=match):
        make_splits(Y, Y_TEST, spec, holdout_fraction=0.1, seed=0)


def test_stratified_split_partitions():
    rest, part = stratified_split(Y, 0.2, seed=0)
    assert len(np.intersect1d(rest, part)) == 0 and len(rest) + len(part) == len(Y)
    assert np.bincount(Y[part]).tolist() == [8] * 5


# -- the user's own splits and further deletion requests (issue 25) ----------------------------------------------------
def test_a_forget_set_combines_classes_and_indices():
    """One request naming a class and some samples could not be stated: ForgetSpec took exactly one mode."""
    spec = ForgetSpec(classes=[1], indices=[0, 5, 199])
    assert spec.mode == "combined"
    s = make_splits(Y, Y_TEST, spec, holdout_fraction=0.1, seed=0)
    assert set(s.forget.tolist()) == set(np.flatnonzero(Y == 1)) - set(s.holdout.tolist()) | {0, 5, 199}
    assert s.forget_classes == [1] and set(Y_TEST[s.test_forget]) == {1}  # class 1 is forgotten whole
    assert not np.isin([0, 5, 199], s.holdout).any()
    sub = make_splits(Y, Y_TEST, ForgetSpec(classes=[2], per_class=5, indices=[0]), seed=0)
    assert len(sub.forget) == 6 and 0 in sub.forget and sub.forget_classes == []
    with pytest.raises(ValueError, match="exactly one mode"):
        ForgetSpec(classes=[1], fraction=0.1, indices=[3])


def test_the_users_holdout_replaces_the_drawn_one():
    held = np.arange(0, 200, 10)
    s = make_splits(Y, Y_TEST, SPECS["random"], holdout=held, seed=0)
    assert np.array_equal(s.holdout, held) and not np.isin(s.forget, held).any() and not np.isin(s.retain, held).any()
    with pytest.raises(ValueError, match=r"Forget indices \[0, 50\] are in the holdout"):
        make_splits(Y, Y_TEST, ForgetSpec(indices=[0, 5, 50]), holdout=held)
    with pytest.raises(IndexError, match="Holdout indices out of range"):
        make_splits(Y, Y_TEST, None, holdout=[3, 200])


def test_sequential_requests_forget_among_what_is_left():
    from lightning_unlearn.data import sequential_splits

    specs = [ForgetSpec(classes=[1]), ForgetSpec(indices=[2, 3, 4]), ForgetSpec(fraction=0.05)]
    first, second, third = sequential_splits(Y, Y_TEST, specs, holdout_fraction=0.1, seed=0)
    assert np.array_equal(first.holdout, second.holdout) and np.array_equal(first.holdout, third.holdout)
    assert np.array_equal(second.forgotten, first.forget)
    assert np.array_equal(third.forgotten, np.union1d(first.forget, second.forget))
    assert not np.isin(third.forget, third.forgotten).any()
    gold_data = set(third.retain.tolist())  # what the gold model of request 3 is trained on
    assert gold_data == set(range(200)) - set(third.holdout.tolist()) - set(third.cumulative_forget.tolist())
    assert "forgotten" in third.hashes() and "forgotten" not in first.hashes()  # first requests hash as before
    assert not np.isin(third.test_retain, np.flatnonzero(Y_TEST == 1)).any()  # class 1 is gone from test_retain
    with pytest.raises(ValueError, match="forgotten by an earlier request already"):
        sequential_splits(Y, Y_TEST, [ForgetSpec(indices=[2, 3]), ForgetSpec(indices=[3])])
    with pytest.raises(ValueError, match="every sample it names was forgotten by an earlier request"):
        sequential_splits(Y, Y_TEST, [ForgetSpec(classes=[1]), ForgetSpec(classes=[1])])


@pytest.mark.parametrize(
    "mode, digest",
    [("classwise", "444d696a48b28ef1"), ("subclass", "9e10978511c4d6ac"), ("random", "6a9b43d6c694c29e"),
     ("indices", "12a40a35bf639e0d")],
)
def test_a_first_request_draws_as_before(mode, digest):
    """A first request's splits (the only kind there was) are those of the code before sequential requests (digests
    computed with c7d07c8), so every split hash a checkpoint recorded stays valid."""
    import hashlib

    s = make_splits(Y, Y_TEST, SPECS[mode], holdout_fraction=0.1, seed=3)
    assert hashlib.sha256(json.dumps(s.hashes(), sort_keys=True).encode()).hexdigest()[:16] == digest
