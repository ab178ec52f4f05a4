"""The committed sample beats of the device selftest are what the generator makes."""
from __future__ import annotations

import numpy as np

from datasets.sample_beats import SAMPLE_PATH, sample_beats


def test_committed_sample_matches_the_generator():
    with np.load(SAMPLE_PATH) as committed:
        regenerated = sample_beats()
        for key in ("beat", "log_rr", "label"):
            np.testing.assert_array_equal(committed[key], regenerated[key])
    assert set(np.unique(regenerated["label"])) == {0, 1, 2}
