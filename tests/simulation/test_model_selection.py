"""The selection rule keeps the configuration in force unless a challenger beats it by more than the folds' noise."""
import pytest

from simulation.model_selection import MarginRule


def folds(*macro: float) -> dict[str, dict[str, float]]:
    return {str(i): {"macro_f1": m} for i, m in enumerate(macro)}


# Stop 33's validation macro-F1 per fold (benchmarks/results/selection.json): 3 local epochs in force, 1 epoch the challenger.
THREE_EPOCHS = folds(0.6920, 0.4769, 0.6230)
ONE_EPOCH = folds(0.6845, 0.4714, 0.6512)


def test_a_gain_inside_the_folds_noise_keeps_the_incumbent():
    # +0.005 in the mean, carried by one fold: stop 33 switched on this; the rule would not have.
    chosen, [gain] = MarginRule().decide("3 epochs", {"3 epochs": THREE_EPOCHS, "1 epoch": ONE_EPOCH})
    assert chosen == "3 epochs"
    assert gain.mean == pytest.approx(0.0051, abs=1e-4)
    assert not gain.wins and gain.required > gain.mean


def test_a_consistent_gain_beyond_the_noise_wins_and_the_largest_winner_is_chosen():
    incumbent = folds(0.60, 0.45, 0.62)
    variants = {"in force": incumbent, "small": folds(0.62, 0.47, 0.64), "large": folds(0.65, 0.49, 0.68), "worse": folds(0.50, 0.40, 0.60)}
    chosen, gains = MarginRule().decide("in force", variants)
    assert chosen == "large"
    assert {g.challenger for g in gains if g.wins} == {"small", "large"}


def test_a_steady_gain_still_needs_the_minimum():
    # Zero spread makes the standard error 0; the floor of 0.01 still applies.
    chosen, [gain] = MarginRule().decide("a", {"a": folds(0.60, 0.50), "b": folds(0.605, 0.505)})
    assert chosen == "a" and gain.required == pytest.approx(0.01)


def test_gains_pair_only_the_folds_both_were_scored_on():
    # The incumbent on 5 folds, one challenger confirmed on all 5, another still on folds 0-2.
    incumbent = folds(0.60, 0.45, 0.62, 0.55, 0.60)
    chosen, gains = MarginRule().decide("a", {"a": incumbent, "b": folds(0.62, 0.47, 0.64, 0.56, 0.50), "c": folds(0.70, 0.55, 0.72)})
    by_name = {g.challenger: g for g in gains}
    assert by_name["b"].mean == pytest.approx((0.02 + 0.02 + 0.02 + 0.01 - 0.10) / 5)  # fold 4's loss counts
    assert by_name["c"].mean == pytest.approx(0.10)
    assert chosen == "c"


def test_unpaired_or_missing_scores_are_refused():
    with pytest.raises(ValueError, match="2 shared folds, got 1"):
        MarginRule().decide("a", {"a": folds(0.6, 0.5, 0.4), "b": {"0": {"macro_f1": 0.7}, "7": {"macro_f1": 0.6}}})
    with pytest.raises(ValueError, match="2 shared folds, got 1"):
        MarginRule().decide("a", {"a": folds(0.6), "b": folds(0.7)})
    with pytest.raises(ValueError, match="no validation scores"):
        MarginRule().decide("c", {"a": folds(0.6, 0.5)})


# Stop 35: 1 local epoch in force, 3 epochs the challenger (benchmarks/results/selection_all_people.json, selection.json).
ALL_PEOPLE = {"1 epoch": folds(0.5608, 0.6072, 0.5825, 0.6157, 0.5830), "3 epochs": folds(0.5732, 0.6112, 0.5872, 0.6394, 0.5918)}
DS1 = {"1 epoch": folds(0.6845, 0.4714, 0.6512, 0.5663, 0.6283), "3 epochs": folds(0.6920, 0.4769, 0.6230, 0.6311, 0.6341)}


def test_all_people_folds_decide_and_the_ds1_folds_veto_only_a_loss_there():
    chosen, [gain] = MarginRule().decide_with_veto("1 epoch", ALL_PEOPLE, DS1)
    assert chosen == "3 epochs" and gain.wins and gain.mean == pytest.approx(0.0107, abs=1e-4)
    # The same all-people win is passed over when the challenger loses on the DS1 folds
    losing = {**DS1, "3 epochs": folds(0.6920, 0.4769, 0.6230, 0.5463, 0.6083)}
    assert MarginRule().decide_with_veto("1 epoch", ALL_PEOPLE, losing)[0] == "1 epoch"
    # On the DS1 folds alone the gain (+0.011, se 0.015) is inside their noise
    assert MarginRule().decide("1 epoch", DS1)[0] == "1 epoch"


def test_a_winner_without_veto_scores_is_refused():
    with pytest.raises(ValueError, match="veto folds lack"):
        MarginRule().decide_with_veto("1 epoch", ALL_PEOPLE, {"1 epoch": DS1["1 epoch"]})
