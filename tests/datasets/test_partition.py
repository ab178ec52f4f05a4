"""Smartwatch clients: one patient per watch, no test patient in training, shared arrays."""
from __future__ import annotations

import json

import numpy as np
import pytest

from datasets.loading import load_split
from datasets.partition import ClientPopulation, PartitionConfig, partition, population_summary
from datasets.loading import load_record_beats
from datasets.splits import DS2, person_of, split_records
from edge_runtime.beats import BeatSpec
from simulation.cli import main


@pytest.fixture(scope="module")
def ds1(mitdb):
    return load_split(mitdb, "DS1")


def test_cli_deals_2000_single_patient_watches_from_mitdb(mitdb, capsys):
    assert main(["data", "partition", "--data-dir", str(mitdb), "--scheme", "patient", "--clients", "2000", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["clients"] == 2000 and summary["patients"] == 21  # DS1 without 201, the person of DS2's 202
    assert summary["max_patients_per_client"] == 1
    assert summary["test_patients_in_train"] == 0
    sizes = summary["examples_per_client"]
    assert 30 <= sizes["min"] <= sizes["median"] <= sizes["max"] <= 400  # three 30 s strips


def test_each_watch_holds_beats_of_one_patient_within_its_strips(ds1):
    population = partition(ds1, PartitionConfig(clients=300, strips_per_client=2, seed=3))
    for c in range(len(population)):
        beats = population.client(c)
        assert beats.size > 0
        assert np.unique(ds1.patient[beats]).size == 1
        assert np.unique(beats).size == beats.size
    # Two 30 s strips span at most 60 s of beats each... per strip: total <= ~2 x 30 s at 200 bpm
    assert population.sizes().max() <= 2 * 30 * 200 / 60


def test_partition_is_seeded(ds1):
    a = partition(ds1, PartitionConfig(clients=500, seed=1))
    b = partition(ds1, PartitionConfig(clients=500, seed=1))
    c = partition(ds1, PartitionConfig(clients=500, seed=2))
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)


def test_quantity_skew_has_a_heavy_tail(ds1):
    equal = partition(ds1, PartitionConfig(clients=2000, seed=0)).sizes()
    skewed = partition(ds1, PartitionConfig(scheme="quantity", clients=2000, quantity_sigma=1.0, seed=0)).sizes()
    assert skewed.max() > 3 * equal.max()
    assert skewed.min() < equal.min()
    assert np.median(skewed) < np.median(equal)


def test_dirichlet_deals_every_beat_exactly_once_with_label_skew(ds1):
    population = partition(ds1, PartitionConfig(scheme="dirichlet", clients=200, alpha=0.1, seed=0))
    assert len(population) == 200 and population.sizes().min() >= 1
    np.testing.assert_array_equal(np.sort(population.indices), np.arange(len(ds1)))
    # Skew: with alpha=0.1, most clients hold far more or far less V than the 7 % population share.
    v_share = np.array([np.mean(ds1.labels[population.client(c)] == 2) for c in range(200)])
    assert np.mean((v_share < 0.02) | (v_share > 0.2)) > 0.5
    summary = population_summary(population, ds1, DS2)
    assert summary["test_patients_in_train"] == 0


def test_10000_clients_share_arrays_instead_of_copying(ds1):
    population = partition(ds1, PartitionConfig(scheme="quantity", clients=10_000, seed=0))
    assert len(population) == 10_000
    assert population.client(17).base is population.indices  # a view, not a copy
    bytes_per_copied_beat = ds1.windows[0].nbytes + ds1.rr.itemsize * ds1.rr.shape[1]
    copies = population.indices.size * bytes_per_copied_beat
    assert population.indices.nbytes + population.offsets.nbytes < copies / 50


def test_leakage_audit_counts_test_patients(ds1):
    # Pretend two DS1 patients were test patients: the audit must see them.
    population = partition(ds1, PartitionConfig(clients=100, seed=0))
    summary = population_summary(population, ds1, test_patients=("101", "106", "999"))
    assert summary["test_patients_in_train"] == 2


def test_the_audit_works_on_people_and_training_never_holds_a_test_person(mitdb):
    # Records 201 (de Chazal DS1) and 202 (DS2) are one man: training must not hold 201
    assert person_of("201") == person_of("202")
    splits = split_records(mitdb)
    assert "201" not in splits["DS1"] and "202" in splits["DS2"]
    assert not {person_of(r) for r in splits["DS1"]} & {person_of(r) for r in splits["DS2"]}
    # Training on record 201 is caught as leakage of test person 202, although no record name is shared
    table = load_record_beats(mitdb / "201", BeatSpec())
    population = partition(table, PartitionConfig(clients=5, seed=0))
    assert population_summary(population, table, test_patients=DS2)["test_patients_in_train"] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scheme": "iid"}, "scheme must be one of patient, quantity, dirichlet"),
        ({"clients": 0}, "clients must be >= 1"),
        ({"alpha": 0}, "alpha must be positive"),
        ({"strips_per_client": 0}, "strips_per_client must be >= 1"),
        ({"quantity_sigma": -1}, "quantity_sigma must be >= 0"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PartitionConfig(**kwargs)


def test_population_from_lists_round_trips():
    population = ClientPopulation.from_lists([np.array([3, 1]), np.array([7]), np.array([0, 2, 5])])
    assert len(population) == 3
    assert population.client(2).tolist() == [0, 2, 5]
    assert population.sizes().tolist() == [2, 1, 3]
