"""The availability model: dropout, stragglers, deadline, over-selection, abandoned rounds."""
from __future__ import annotations

import numpy as np
import pytest

from simulation.availability import AvailabilityConfig, AvailabilityModel
from simulation.config import SimulationConfig


def model(**overrides) -> AvailabilityModel:
    return AvailabilityModel(AvailabilityConfig(**overrides), client_sizes=np.full(1000, 100), seed=3)


def test_over_selection_invites_more_and_keeps_k():
    plan = model(clients_per_round=20, overselect=1.3, dropout=0.0, deadline_s=1e9).plan_round(1, epochs=1, payload_bytes=40_000)
    assert plan.invited.size == 26 and plan.reporters.size == 20 and plan.surplus == 6
    assert np.unique(plan.invited).size == 26 and set(plan.reporters) <= set(plan.invited)


def test_dropout_rate_matches_its_probability():
    availability = model(clients_per_round=50, dropout=0.1, deadline_s=1e9)
    dropped = [availability.plan_round(r, epochs=1, payload_bytes=40_000).dropped for r in range(200)]
    assert np.sum(dropped) / (200 * 65) == pytest.approx(0.1, abs=0.015)


def test_a_tight_deadline_makes_stragglers_and_favours_fast_devices():
    availability = model(clients_per_round=50, overselect=1.0, dropout=0.0, deadline_s=1.0, min_reports_fraction=0.01)
    plans = [availability.plan_round(r, epochs=5, payload_bytes=40_000) for r in range(50)]
    assert sum(p.late for p in plans) > 0
    reporters = np.concatenate([p.reporters for p in plans])
    watches = availability.device[reporters] == 1
    assert watches.mean() < np.mean(availability.device == 1)  # slow watches miss the deadline more


def test_round_is_abandoned_below_min_reports():
    plan = model(clients_per_round=10, dropout=0.95, min_reports_fraction=0.5).plan_round(1, epochs=1, payload_bytes=1)
    assert plan.abandoned and plan.reporters.size < 5


def test_rounds_are_a_function_of_seed_and_round_only():
    a, b = model(), model()
    b.plan_round(9, epochs=1, payload_bytes=1)  # consuming other rounds changes nothing
    np.testing.assert_array_equal(a.plan_round(4, epochs=1, payload_bytes=1).reporters, b.plan_round(4, epochs=1, payload_bytes=1).reporters)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"overselect": 0.9}, "overselect must be >= 1.0"),
        ({"clients_per_round": 0}, "clients_per_round must be >= 1"),
        ({"deadline_s": 0}, "deadline_s must be positive"),
        ({"min_reports_fraction": 0}, r"min_reports_fraction must be in \(0, 1\]"),
        ({"poisson_rate": 1.5}, r"poisson_rate must be in \(0, 1\]"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AvailabilityConfig(**kwargs)


def test_population_too_small_for_the_invitations():
    with pytest.raises(ValueError, match="cannot invite 26 clients per round from a population of 10"):
        AvailabilityModel(AvailabilityConfig(clients_per_round=20), client_sizes=np.ones(10), seed=0)


def test_under_dp_each_patient_is_included_at_the_rate_the_accountant_uses():
    # Prepare: the review's case, 22 patients and K = 11 (q = 0.5), no dropout or stragglers to hide behind
    config = SimulationConfig(dp_noise_multiplier=1.0, clients_per_round=11, dropout=0.0, deadline_s=1e9)
    population = 22
    availability = AvailabilityModel(config.sampled_availability(population), client_sizes=np.full(population, 100), seed=0)
    # Execute
    plans = [availability.plan_round(r, epochs=1, payload_bytes=1) for r in range(1, 4001)]
    # Assert: every patient's inclusion frequency is q (before: 0.636, over-selection kept the first K of 15)
    inclusion = np.bincount(np.concatenate([p.reporters for p in plans]), minlength=population) / len(plans)
    q = config.clients_per_round / population
    assert np.abs(inclusion - q).max() < 0.03
    sizes = np.array([p.reporters.size for p in plans])
    assert sizes.var() == pytest.approx(population * q * (1 - q), rel=0.15)  # independent coins: binomial cohort size
    assert sizes.max() > config.clients_per_round  # no cap at K


def test_under_dp_dropouts_and_stragglers_only_remove_contributions():
    availability = model(clients_per_round=50, dropout=0.2, deadline_s=2.0, poisson_rate=0.05)
    for round_index in range(1, 50):
        plan = availability.plan_round(round_index, epochs=5, payload_bytes=40_000)
        assert plan.reporters.size == plan.invited.size - plan.dropped - plan.late and plan.surplus == 0
