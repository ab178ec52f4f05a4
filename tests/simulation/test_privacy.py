"""DP-FedAvg aggregation, its accounting, and secure aggregation."""
from __future__ import annotations

import json

import dp_accounting
import numpy as np
import pytest
import tensorflow_federated as tff

from datasets.loading import load_split
from models.beat_classifier import class_weights
from simulation.config import SimulationConfig, load_config
from simulation.accounting import dp_epsilon, noise_for_epsilon
from simulation.privacy import noise_to_signal, private_aggregator, secure_mean_aggregator
from simulation.privacy_config import PrivacyConfig
from simulation.beat_data import public_reference, synthetic_data_dir
from simulation.tff_runtime import LocalTffRuntime
from tests.simulation.test_runner import fedbeat, write_config

VECTOR = tff.TensorType(np.float32, [1000])


@pytest.fixture(scope="module")
def tff_context(tmp_path_factory):
    with LocalTffRuntime(log_path=tmp_path_factory.mktemp("worker") / "worker.log"):
        yield


def aggregate(factory, values: list[np.ndarray]) -> np.ndarray:
    process = factory.create(VECTOR, tff.TensorType(np.float32))
    output = process.next(process.initialize(), [v.astype(np.float32) for v in values], [np.float32(40.0)] * len(values))
    return np.asarray(output.result)


def test_a_malicious_client_moves_the_sum_by_at_most_the_clip(tff_context):
    # Prepare: four honest clients with small updates, one with a huge one; fixed clip 0.5, negligible noise
    rng = np.random.default_rng(0)
    honest = [rng.normal(0, 0.002, 1000) for _ in range(4)]  # norm ~0.06 < clip: passes unclipped
    attacker = np.full(1000, 1e6)
    privacy = PrivacyConfig(noise_multiplier=1e-9, clip=0.5)
    # Execute
    mean = aggregate(private_aggregator(privacy, clients_per_round=5), honest + [attacker])
    # Assert: the server's sum (mean x K) differs from the honest sum by the attacker's clipped update only
    moved = np.linalg.norm(mean * 5 - np.sum(honest, axis=0))
    assert moved == pytest.approx(0.5, rel=1e-3)
    assert np.all(np.isfinite(mean))


def test_noise_std_is_noise_multiplier_times_clip_over_clients(tff_context):
    privacy = PrivacyConfig(noise_multiplier=2.0, clip=0.1)
    mean = aggregate(private_aggregator(privacy, clients_per_round=4), [np.zeros(1000)] * 4)
    expected = 2.0 * 0.1 / 4  # z C / K per coordinate of the mean
    assert np.std(mean) == pytest.approx(expected, rel=0.1)  # 1000 draws: ~2 % standard error


def test_secure_aggregation_is_the_plain_mean_only_below_its_clip(tff_context):
    # Updates of norm ~0.32, under TFF's secure aggregator's clip: the plain mean up to quantization
    rng = np.random.default_rng(1)
    values = [rng.normal(0, 0.01, 1000) for _ in range(6)]
    plain = aggregate(tff.aggregators.MeanFactory(), values)
    secure = aggregate(secure_mean_aggregator(), values)
    np.testing.assert_allclose(secure, plain, atol=1e-4)
    assert np.abs(plain).max() > 1e-3  # the comparison is not between zeros
    # One update of norm 2 (above the clip): it is clipped, so the result is not the plain mean
    values[0] = values[0] / np.linalg.norm(values[0]) * 2.0
    plain = aggregate(tff.aggregators.MeanFactory(), values)
    secure = aggregate(secure_mean_aggregator(), values)
    assert np.linalg.norm(secure - plain) / np.linalg.norm(plain) > 0.2
    assert np.linalg.norm(secure) < np.linalg.norm(plain)


def test_secure_sum_with_dp_clips_and_adds_the_same_noise_scale(tff_context):
    privacy = PrivacyConfig(noise_multiplier=2.0, clip=0.1, secure_aggregation=True)
    mean = aggregate(private_aggregator(privacy, clients_per_round=4), [np.zeros(1000)] * 4)
    assert np.std(mean) == pytest.approx(2.0 * 0.1 / 4, rel=0.1)


def exact_gaussian_epsilon(sigma: float, delta: float) -> float:
    """The tight epsilon of one Gaussian mechanism of sensitivity 1 (Balle & Wang 2018, Theorem 8)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    def delta_of(epsilon: float) -> float:
        return norm.cdf(-epsilon * sigma + 1 / (2 * sigma)) - np.exp(epsilon) * norm.cdf(-epsilon * sigma - 1 / (2 * sigma))

    return brentq(lambda epsilon: delta_of(epsilon) - delta, 0.0, 100.0)


def test_epsilon_is_a_sound_and_useful_bound_and_target_epsilon_inverts_it():
    # Without sampling, T Gaussian releases of noise z compose exactly into one of noise z / sqrt(T):
    # the accountant's epsilon must be above that tight value (sound) and not far above (useful)
    for z, rounds in ((1.0, 10), (2.0, 100), (5.0, 500)):
        exact = exact_gaussian_epsilon(z / np.sqrt(rounds), 1e-5)
        accounted = dp_epsilon(noise_multiplier=z, sampling_rate=1.0, rounds=rounds, delta=1e-5)
        assert exact <= accounted <= 1.3 * exact, (z, rounds, exact, accounted)
    # Sampling amplifies: at q = 1 % the same releases cost far less, and epsilon grows with rounds
    assert dp_epsilon(noise_multiplier=1.1, sampling_rate=0.01, rounds=500, delta=1e-5) < 0.2 * dp_epsilon(noise_multiplier=1.1, sampling_rate=1.0, rounds=500, delta=1e-5)
    assert dp_epsilon(noise_multiplier=1.1, sampling_rate=0.01, rounds=100, delta=1e-5) < dp_epsilon(noise_multiplier=1.1, sampling_rate=0.01, rounds=500, delta=1e-5)
    noise = noise_for_epsilon(3.0, sampling_rate=0.01, rounds=500, delta=1e-5)
    assert dp_epsilon(noise_multiplier=noise, sampling_rate=0.01, rounds=500, delta=1e-5) == pytest.approx(3.0, rel=1e-3)
    assert dp_epsilon(noise_multiplier=noise * 0.9, sampling_rate=0.01, rounds=500, delta=1e-5) > 3.0
    assert noise_to_signal(1.0, 100, 10_000) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dp_noise_multiplier": 0.0}, "dp_noise_multiplier must be positive"),
        ({"dp_noise_multiplier": 1.0, "dp_clip": "big"}, "dp_clip must be 'adaptive' or a positive"),
        ({"dp_noise_multiplier": 1.0, "dp_target_delta": 1.5}, "dp_target_delta must be in"),
        ({"dp_noise_multiplier": 1.0, "dp_clip_quantile": 1.0}, "dp_clip_quantile must be in"),
        ({"dp_noise_multiplier": 1.0, "dp_target_epsilon": 3.0}, "not both"),
        ({"dp_noise_multiplier": 1.0, "partition": "dirichlet"}, "needs partition 'patient'"),
        ({"dp_noise_multiplier": 1.0, "secure_aggregation": True}, "needs a fixed clip"),
    ],
)
def test_invalid_privacy_settings_fail_before_work(fields, message):
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**fields)


@pytest.mark.slow
def test_dp_run_reports_the_epsilon_dp_accounting_gives(tmp_path):
    # Prepare: 12 synthetic subjects -> 6 DS1 patients, one watch each; 3 per round
    config = write_config(tmp_path / "dp.toml", synthetic_subjects=12, clients_per_round=3)
    # Execute
    result = fedbeat("simulate", "--config", str(config), "--rounds", "4", "--dp-noise-multiplier", "0.8", "--out", str(tmp_path / "run"), "--json")
    # Assert
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: DP noise" in result.stderr  # 3 clients cannot carry z=0.8 over 9.7k parameters
    summary = json.loads(result.stdout)
    privacy = summary["privacy"]
    assert summary["clients_total"] == 6 and summary["population"]["max_patients_per_client"] == 1
    assert privacy["sampling_rate"] == pytest.approx(0.5)
    assert privacy["rounds"] == summary["rounds"]["applied"]
    event = dp_accounting.PoissonSampledDpEvent(privacy["sampling_rate"], dp_accounting.GaussianDpEvent(privacy["noise_multiplier"]))
    accountant = dp_accounting.rdp.RdpAccountant().compose(dp_accounting.SelfComposedDpEvent(event, privacy["rounds"]))
    assert privacy["epsilon"] == pytest.approx(accountant.get_epsilon(privacy["delta"]), rel=0.05)
    epsilons = [json.loads(line)["epsilon"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epsilons == sorted(epsilons) and epsilons[-1] == pytest.approx(privacy["epsilon"])
    assert privacy["clip"]["mode"] == "adaptive" and privacy["clip"]["last"] > 0
    # Nothing un-noised about the clients leaves: no per-round train loss, class weights from public data
    assert not any("train_loss" in json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    assert summary["class_weights"] == pytest.approx(class_weights(public_reference().labels).tolist())
    assert summary["class_weights"] != pytest.approx(class_weights(load_split(synthetic_data_dir(load_config(config, {})), "DS1").labels).tolist())


@pytest.mark.slow
def test_secure_aggregation_composes_with_compression_and_fixed_clip_dp(tmp_path):
    config = write_config(tmp_path / "sa.toml", synthetic_subjects=12, clients_per_round=3)
    result = fedbeat(
        "simulate", "--config", str(config), "--rounds", "2", "--secure-aggregation", "--compression", "rotated1bit",
        "--dp-noise-multiplier", "0.5", "--dp-clip", "0.5", "--out", str(tmp_path / "run"), "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["secure_aggregation"] is True and summary["privacy"]["clip"] == 0.5
    assert summary["rounds"]["applied"] >= 1
