"""The one input rule of server and device: sampling rates and which lead to read."""
from __future__ import annotations

import pytest

from edge_runtime.signal_input import check_sampling_rate, choose_lead


@pytest.mark.parametrize("names, expected", [
    (["V5", "MLII"], 1),  # mitdb 114: MLII wherever it is
    (["ECG1", "ECG2"], 0),  # svdb
    (["RESP", "I"], 1),  # a watch's lead I after a non-ECG channel
    (["Pleth", "lead II", "V1"], 1),
    (["ABP", "EKG chest"], 1),
])
def test_default_lead_is_mlii_else_the_first_ecg_channel(names, expected):
    assert choose_lead(names, None, "rec") == expected


def test_a_named_lead_must_exist_and_no_ecg_channel_is_an_error_naming_them():
    assert choose_lead(["RESP", "ABP"], "ABP", "rec") == 1
    with pytest.raises(ValueError, match=r"rec: no lead 'MLII' \(leads: RESP, ABP\)"):
        choose_lead(["RESP", "ABP"], "MLII", "rec")
    with pytest.raises(ValueError, match="rec: no ECG lead among the channels RESP, ABP, Ivy"):
        choose_lead(["RESP", "ABP", "Ivy"], None, "rec")


@pytest.mark.parametrize("fs", [0.0, -300.0, float("nan"), float("inf"), 50.0, 99.9, 6000.0])
def test_unusable_rates_are_refused(fs):
    with pytest.raises(ValueError, match="is not supported"):
        check_sampling_rate(fs, "--fs")


def test_usable_rates_pass():
    assert [check_sampling_rate(fs, "x") for fs in (100.0, 128.0, 360.0, 512.0)] == [100.0, 128.0, 360.0, 512.0]
