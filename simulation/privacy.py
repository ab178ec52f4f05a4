"""User-level DP-FedAvg (McMahan et al. 2018) with adaptive clipping (Andrew et al. 2021), its
privacy accounting, and secure aggregation (Bonawitz et al. 2017), as TFF aggregators.

The privacy unit is the patient: with DP on, each DS1 patient owns exactly one simulated
watch (``clients`` = number of training patients), so clipping a client's update bounds a
patient's contribution and the accountant's sampling rate is per patient. (Several watches
per patient would each be clipped, and a patient could contribute several clip norms a
round; the accountant would then understate epsilon.)

Accounting (accounting.py, TensorFlow-free for the coordinator): RDP of the Poisson-subsampled Gaussian mechanism, sampling rate
q = clients_per_round / patients, composed over the rounds whose noisy aggregate was
released (abandoned rounds release nothing). TFF's adaptive clipping spends part of the
noise on the clipped-count estimate; ``gaussian_adaptive`` takes the *total* noise
multiplier, which is what is accounted here.
"""
from __future__ import annotations

import math

import tensorflow_federated as tff
import tensorflow_privacy as tfp

from simulation.privacy_config import PrivacyConfig


def noise_to_signal(noise_multiplier: float, clients_per_round: int, parameters: int) -> float:
    """Expected L2 norm of the noise on the mean update over the largest possible signal (the clip).

    Noise std per coordinate is z C / K, so its norm is ~ z C sqrt(d) / K against a mean of
    clipped updates of norm <= C: above ~1 the noise swamps what clients agree on.
    """
    return noise_multiplier * math.sqrt(parameters) / clients_per_round


def private_aggregator(privacy: PrivacyConfig, clients_per_round: int) -> tff.aggregators.WeightedAggregationFactory:
    """Clip each client's update, sum (securely if asked), add Gaussian noise, divide by K.

    Unweighted by construction (a weighted mean would let a client's example count scale its
    contribution past the clip); wrapped to accept the weights the learning process passes.
    """
    expected = float(clients_per_round)
    if privacy.clip == "adaptive":
        # TFF splits z between the update and the clipped-count estimate and needs the count's
        # noise above z / 2; its default 0.05 K is too little for small cohorts.
        count_stddev = max(0.05 * expected, privacy.noise_multiplier)
        factory = tff.aggregators.DifferentiallyPrivateFactory.gaussian_adaptive(
            privacy.noise_multiplier, expected, target_unclipped_quantile=privacy.clip_quantile, clipped_count_stddev=count_stddev
        )
    elif privacy.secure_aggregation:
        clip = float(privacy.clip)
        query = tfp.NormalizedQuery(tfp.GaussianSumQuery(l2_norm_clip=clip, stddev=clip * privacy.noise_multiplier), denominator=expected)
        # Clipped records have every coordinate in [-clip, clip]: the secure sum's fixed range.
        factory = tff.aggregators.DifferentiallyPrivateFactory(query, tff.aggregators.SecureSumFactory(clip, -clip))
    else:
        factory = tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(privacy.noise_multiplier, expected, float(privacy.clip))
    return tff.aggregators.as_weighted_aggregator(factory)


def secure_mean_aggregator() -> tff.aggregators.WeightedAggregationFactory:
    """TFF's secure weighted mean (adaptive zeroing and clipping, values summed with secure sum)."""
    return tff.learning.secure_aggregator(weighted=True)
