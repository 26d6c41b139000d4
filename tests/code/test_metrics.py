"""UF1, UAR, accuracy against hand-computed cases; LOSO and LODO folds; the AU-oracle ceiling."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mer_core.data.action_units import AU_SETS, au_targets, parse_action_units
from mer_core.evaluation.ceiling import predict_from_action_units
from mer_core.evaluation.metrics import (
    accuracy,
    confusion_matrix,
    mean_au_f1,
    per_au_f1,
    unweighted_average_recall,
    unweighted_f1,
)
from mer_core.evaluation.protocols import (
    held_out_folds,
    inner_subject_split,
    labelled_subsample,
    leave_one_dataset_out,
    leave_one_subject_out,
    protocol_id,
)
from mer_core.evaluation.report import ablation_report, oracle_best_epoch


def test_metrics_by_hand():
    actual = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", "a", "a"]
    # a: tp 2, fp 2, fn 1 → F1 4/7, recall 2/3; b: tp 1, fp 1, fn 1 → F1 1/2, recall 1/2;
    # c: never predicted → F1 0, recall 0.
    assert unweighted_f1(actual, predicted) == pytest.approx((4 / 7 + 1 / 2 + 0) / 3)
    assert unweighted_average_recall(actual, predicted) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert accuracy(actual, predicted) == pytest.approx(3 / 6)


def test_class_absent_from_ground_truth_does_not_dilute():
    # "z" is predicted but never true: it costs a's precision, but is not a class of its own.
    actual, predicted = ["a", "a", "b"], ["a", "z", "b"]
    assert unweighted_average_recall(actual, predicted) == pytest.approx((1 / 2 + 1) / 2)
    assert unweighted_f1(actual, predicted) == pytest.approx((2 / 3 + 1) / 2)


def test_perfect_and_confusion():
    assert unweighted_f1(["x", "y"], ["x", "y"]) == 1.0
    assert confusion_matrix(["x", "y", "y"], ["x", "x", "y"], ["x", "y"]) == [[1, 0], [1, 1]]


@given(st.lists(st.sampled_from(["casme2/s1", "casme2/s2", "samm/s1", "samm/007", "smic/s3"]), min_size=1, max_size=40))
def test_loso_folds_are_subject_disjoint_and_cover_every_clip(subjects):
    folds = leave_one_subject_out(subjects)
    assert len(folds) == len(set(subjects))
    seen = []
    for held_out, train, test in folds:
        assert {subjects[i] for i in test} == {held_out}
        assert held_out not in {subjects[i] for i in train}
        assert sorted(train + test) == list(range(len(subjects)))
        seen += test
    assert sorted(seen) == list(range(len(subjects)))


def test_lodo_folds_hold_out_one_data_set_each():
    subjects = ["casme2/s1", "casme2/s2", "samm/006", "smic/s1", "samm/007"]
    datasets = [s.split("/")[0] for s in subjects]
    folds = leave_one_dataset_out(datasets)
    assert folds == [("casme2", [2, 3, 4], [0, 1]), ("samm", [0, 1, 3], [2, 4]), ("smic", [0, 1, 2, 4], [3])]
    assert held_out_folds("lodo", subjects, datasets) == folds
    assert len(held_out_folds("loso", subjects, datasets)) == 5
    with pytest.raises(ValueError, match="needs two data sets or more"):
        leave_one_dataset_out(["casme2", "casme2"])


@given(st.lists(st.sampled_from(["s1", "s2", "s3", "s4", "s5"]), min_size=3, max_size=30),
       st.floats(0.05, 0.95), st.integers(0, 99))
def test_inner_splits_are_subject_disjoint_inside_the_training_fold(subjects, fraction, seed):
    for held_out, train, _ in leave_one_subject_out(subjects):
        if len({subjects[i] for i in train}) < 2:
            with pytest.raises(ValueError, match="two training subjects"):
                inner_subject_split(subjects, train, fraction, seed)
            continue
        inner_train, validation = inner_subject_split(subjects, train, fraction, seed)
        assert inner_train and validation and sorted(inner_train + validation) == train
        assert {subjects[i] for i in inner_train}.isdisjoint(subjects[i] for i in validation)
        assert held_out not in {subjects[i] for i in validation}


@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.floats(0.05, 1.0), st.integers(0, 99))
def test_a_labelled_subsample_keeps_every_class_and_about_its_share(labels, fraction, seed):
    train = list(range(0, len(labels), 2)) or [0]
    kept = labelled_subsample(labels, train, fraction, seed)
    assert set(kept) <= set(train) and kept == sorted(set(kept))
    assert {labels[i] for i in kept} == {labels[i] for i in train}  # no class lost
    for label in {labels[i] for i in train}:
        members = sum(labels[i] == label for i in train)
        assert sum(labels[i] == label for i in kept) == max(1, round(fraction * members))
    assert kept == labelled_subsample(labels, train, fraction, seed)  # the same labels for every row
    assert labelled_subsample(labels, train, 1.0, seed) == train


def test_a_label_budget_below_one_is_its_own_protocol():
    full = protocol_id("label", ["synth_micro"], ["a", "b"])
    assert full == "loso:label:synth_micro:a,b"
    assert protocol_id("label", ["synth_micro"], ["a", "b"], train_fraction=0.25) == full + ":train0.25"


def test_au_oracle_reads_laterality_free_sets():
    assert parse_action_units("R4+R7") == parse_action_units("4+7") == frozenset({4, 7})
    sets = [frozenset({4, 7}), frozenset({4, 7}), frozenset({12}), frozenset({4, 7})]
    labels = ["disgust", "disgust", "happiness", "others"]
    assert predict_from_action_units(sets, labels, frozenset({4, 7})) == "disgust"
    assert predict_from_action_units(sets, labels, frozenset({6, 12})) == "happiness"  # nearest set


def test_oracle_best_epoch_picks_on_the_test_fold():
    rows = [{"fold": 0, "label": "a", "predicted": "b", "predicted_per_epoch": ["a", "b"]},
            {"fold": 1, "label": "b", "predicted": "a", "predicted_per_epoch": ["a", "b"]}]
    # The last epoch gets both wrong; picking each fold's best epoch on its own test clip gets both right.
    assert oracle_best_epoch(rows)["accuracy"] == 1.0


def test_action_unit_codes_as_the_sheets_write_them():
    assert parse_action_units("AU4+L10") == {4, 10}
    assert parse_action_units("R12") == parse_action_units("12C") == parse_action_units("B12") == {12}
    assert parse_action_units("AU12+AU6(k)") == {12} and parse_action_units("AU12+AU6(k)", keep_tagged=True) == {6, 12}
    assert parse_action_units("4?+7") == {7} and parse_action_units("?") == frozenset()
    assert parse_action_units("1+2, 5  25") == {1, 2, 5, 25} and parse_action_units("12.0") == {12}
    assert parse_action_units(None) == parse_action_units("none") == parse_action_units("/") == frozenset()
    assert au_targets(["R12+L14", "4+45", ""], "4dme").tolist() == [
        [0, 0, 0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0, 0, 1], [0] * 8]


def test_the_synthetic_au_set_is_what_the_generator_moves():
    from mer_core.data.synthetic import MICRO_RECIPES

    assert set(AU_SETS["synthetic"]) == {au for recipes in MICRO_RECIPES.values() for r in recipes for au in r}
    assert len(AU_SETS["meb12"]) == 12


def test_per_au_f1_by_hand():
    actual = [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]]
    predicted = [[1, 0, 1], [0, 1, 0], [0, 1, 0], [1, 0, 0]]
    scores = per_au_f1(actual, predicted, ["AU1", "AU2", "AU4"])
    # AU1: tp 1, fp 1, fn 1 → 1/2; AU2: tp 2 → 1; AU4: no clip shows it (fp 1): out of the mean.
    assert [scores[n]["f1"] for n in ("AU1", "AU2", "AU4")] == [0.5, 1.0, 0.0]
    assert scores["AU4"]["support"] == 0 and mean_au_f1(scores) == pytest.approx(0.75)


def _predictions(variant: str, correct: int, seed: int = 0) -> list[dict]:
    """Ten clips of two classes, the first `correct` of them predicted right."""
    labels = ["a", "b"] * 5
    return [{"variant": variant, "seed": seed, "label": label,
             "predicted": label if i < correct else ("b" if label == "a" else "a")}
            for i, label in enumerate(labels)]


def test_ablation_margin_is_over_the_strongest_other_row():
    rows = _predictions("ma2mi_e2e", 9) + _predictions("scratch_e2e", 7) + _predictions("flow_strain_lr", 8)
    report = ablation_report(rows, ["ma2mi_e2e", "scratch_e2e", "flow_strain_lr"], shipped="ma2mi_e2e")
    assert report["shipped"]["strongest_rival"] == "flow_strain_lr"
    assert report["shipped"]["uf1_margin"] == pytest.approx(0.9 - 0.8, abs=0.02)
    assert report["variants"]["scratch_e2e"]["uf1_gain_over_scratch_e2e"] == 0
    # Training from scratch shipped, with no baseline to rival it: no margin, no crash.
    alone = ablation_report(_predictions("scratch_e2e", 7), ["scratch_e2e"], shipped="scratch_e2e")
    assert "shipped" not in alone
