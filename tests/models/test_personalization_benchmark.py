"""The personalisation benchmark: labelled minutes and scored beats never overlap, harm is caught,
and the selection path reads training-side people only."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import datasets.loading as loading
from datasets.splits import DS2, person_of
from edge_runtime.beats import BeatSpec
from edge_runtime.personalization import PersonalizationRecipe
from models.personalization_benchmark import LABELLED_S, WearerOutcome, harms, personalise_wearers, summarise, wearer_split
from tests.conftest import REPO_ROOT
from tests.simulation.test_selection import opened  # noqa: F401  (fixture)


def outcome(labels, global_predictions, personal_predictions, hours=0.5) -> WearerOutcome:
    return WearerOutcome("w", np.array(labels), np.array(global_predictions), np.array(personal_predictions), hours, {"kept": "personal"})


def test_harm_is_an_f1_drop_or_new_false_alarms_per_hour():
    s_wearer = [1] * 20 + [0] * 80
    assert harms(outcome(s_wearer, s_wearer, s_wearer)) == []
    assert harms(outcome(s_wearer, s_wearer, [1] * 19 + [0] * 81)) == []  # F1 1.00 -> 0.97: within 0.05
    lost = harms(outcome(s_wearer, s_wearer, [1] * 10 + [0] * 90))
    assert lost == ["S F1 1.00 -> 0.67"]
    normal = [0] * 100
    assert harms(outcome(normal, normal, [2] * 2 + [0] * 98)) == []  # 4 false V per hour
    assert harms(outcome(normal, normal, [2] * 3 + [0] * 97)) == ["6.0 more false V calls per hour"]
    few_s = [1] * 5 + [0] * 95  # under 10 S beats: F1 is too noisy to judge, and they are not "no S beats"
    assert harms(outcome(few_s, few_s, [0] * 100)) == []


def test_the_labelled_minutes_and_the_scored_beats_are_disjoint_in_time(mitdb):
    table = loading.load_record_beats(mitdb / "232", BeatSpec())
    labelled, scored, hours = wearer_split(table, 0, LABELLED_S)
    assert len(labelled) + len(scored) == len(table)
    times = np.sort(table.time_s)
    assert len(labelled) == int(np.sum(times < LABELLED_S)) and 250 < len(labelled) < 320
    assert np.array_equal(labelled.label, table.labels[np.argsort(table.time_s, kind="stable")][: len(labelled)])
    assert 0.40 < hours < 0.43  # the last 25 of 30 minutes


def personalization_script():
    """benchmarks/personalization.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("personalization_script", REPO_ROOT / "benchmarks" / "personalization.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_selection_reads_training_side_people_only(mitdb, svdb, exported, opened):  # noqa: F811
    everyone, all_folds = personalization_script().validation_wearers(mitdb, "all", svdb)
    assert len(everyone.patients) == sum(len(f) for f in all_folds) == 80 and any("/" in p for p in all_folds[0])
    ds1, folds = personalization_script().validation_wearers(mitdb)
    assert opened and not set(opened) & set(DS2)
    summary = summarise(personalise_wearers(exported[1], ds1.of_patients(folds[0]), PersonalizationRecipe(max_epochs=2)))
    assert set(summary["per_wearer"]) == set(folds[0]) and summary["wearers"] == len(folds[0])
    assert summary["pooled"]["global"]["V"]["support"] == summary["pooled"]["personal"]["V"]["support"] > 0


def test_the_default_recipe_is_the_one_selection_chose():
    script = personalization_script()
    for population in script.SUFFIX:
        selection = json.loads(script.selection_path(population).read_text())
        assert selection["chosen"] in selection["recipes"] and selection["population"] == population
        assert not {p for fold in selection["folds"].values() for p in fold} & {person_of(r) for r in DS2}
    assert script.chosen_recipe() == PersonalizationRecipe()


def test_fedbeat_bench_personalize_reports_every_ds2_wearer(mitdb, exported, tmp_path):
    run = subprocess.run([str(Path(sys.executable).with_name("fedbeat")), "bench", "personalize", "--model", str(exported[1]), "--data-dir", str(mitdb), "--json"],
                         capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert sorted(result["per_wearer"]) == sorted(DS2) and result["wearers"] == 22
    pooled = result["pooled"]
    assert pooled["global"]["S"]["support"] == pooled["personal"]["S"]["support"] > 1000  # the same beats under both models
    assert result["recipe"] == dataclasses.asdict(PersonalizationRecipe()) and isinstance(result["harmed_wearers"], list)
    missing = subprocess.run([str(Path(sys.executable).with_name("fedbeat")), "bench", "personalize", "--model", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "not a `fedbeat export` directory" in missing.stderr
