"""The tuning path: validation people from the training side only; DS2 is never opened there."""
from __future__ import annotations

import numpy as np
import pytest

import datasets.loading as loading
from datasets.splits import DS2, person_of
from simulation.config import SimulationConfig
from simulation.runner import prepare_data, validation_people


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Names of every record whose beats are loaded (from the cache or not)."""
    names: list[str] = []
    real = loading.load_record_beats

    def spy(record_path, *args, **kwargs):
        names.append(record_path.name)
        return real(record_path, *args, **kwargs)

    monkeypatch.setattr(loading, "load_record_beats", spy)
    return names


def test_the_tuning_path_never_opens_a_ds2_record(mitdb, opened):
    # Execute: every validation fold of the tuning mode
    folds = 5
    seen: list[str] = []
    for fold in range(folds):
        data = prepare_data(SimulationConfig(dataset="mitdb", data_dir=str(mitdb), validation_fold=fold, validation_folds=folds, clients=100))
        # Assert: evaluation people are training-side people, disjoint from the fold's training people
        assert not set(data.test.patients) & set(data.train.patients)
        assert not {person_of(p) for p in data.test.patients} & {person_of(p) for p in DS2}
        assert data.audit["test_patients_in_train"] == 0 and "validation fold" in data.evaluated_on
        seen += data.test.patients
    assert opened and not set(opened) & set(DS2)
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 21  # every training person validated exactly once
    # The spy does see DS2 when the report path reads it
    opened.clear()
    prepare_data(SimulationConfig(dataset="mitdb", data_dir=str(mitdb), clients=100))
    assert set(DS2) <= set(opened)


def test_every_validation_fold_holds_s_beats(mitdb):
    data = prepare_data(SimulationConfig(dataset="mitdb", data_dir=str(mitdb), validation_fold=0, clients=100))
    table = loading.load_split(mitdb, "DS1")
    folds = validation_people(table, folds=5, seed=0)
    s_per_fold = [int(np.sum(table.of_patients(f).labels == 1)) for f in folds]
    assert min(s_per_fold) > 0, s_per_fold
    assert set(data.test.patients) == set(folds[0])


def test_extra_databases_join_training_as_people(mitdb, svdb):
    data = prepare_data(SimulationConfig(dataset="mitdb", data_dir=str(mitdb), extra_data_dirs=(str(svdb),), clients=2000))
    people = data.train.patients
    assert len(people) == 21 + 59 and sum(p.startswith("svdb/") for p in people) == 59
    assert int(np.sum(data.train.labels == 1)) > 9000  # svdb's S beats joined training
    assert data.audit["test_patients_in_train"] == 0 and data.audit["patients"] == 80


def test_all_people_folds_deal_every_training_side_person_once_and_never_open_ds2(mitdb, svdb, opened):
    folds = 5
    seen: list[str] = []
    for fold in range(folds):
        config = SimulationConfig(dataset="mitdb", data_dir=str(mitdb), extra_data_dirs=(str(svdb),), validation_fold=fold,
                                  validation_folds=folds, validation_population="all", clients=1000)
        data = prepare_data(config)
        assert not set(data.test.patients) & set(data.train.patients)
        assert len(data.test.patients) + len(data.train.patients) == 80
        extra = sum(p.startswith("svdb/") for p in data.test.patients)
        assert 0 < extra < len(data.test.patients), data.test.patients  # both databases in every fold
        assert f"{len(data.test.patients) - extra} DS1 people, {extra} extra-database people" in data.evaluated_on
        assert int(np.sum(data.test.labels == 1)) > 0
        seen += data.test.patients
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 80
    assert opened and not set(opened) & set(DS2)


def test_an_unknown_validation_population_is_refused():
    with pytest.raises(ValueError, match="validation_population must be one of ds1, all"):
        SimulationConfig(validation_population="svdb")
