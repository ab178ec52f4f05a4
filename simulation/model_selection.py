"""The selection rule: a challenger replaces the configuration in force only by more than the folds' noise.

At stops 31 and 33 the configuration changed on mean validation gains inside the folds' swing
(macro-F1 +0.011 and +0.005 over 3 folds of 4-5 people), and DS2 macro-F1 then moved +0.001 and
-0.017: such margins do not predict strangers. So a challenger must beat the incumbent, on the
same folds, by a mean paired gain of at least ``min_gain`` and of at least ``standard_errors``
standard errors of the per-fold gains. Fixed at stop 34, before the next DS2 read.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

FoldScores = Mapping[str, Mapping[str, float]]
"""fold -> metric name -> score (``benchmarks/results/selection.json``'s ``folds``)."""


@dataclasses.dataclass(frozen=True)
class PairedGain:
    challenger: str
    mean: float
    standard_error: float
    required: float

    @property
    def wins(self) -> bool:
        return self.mean >= self.required


@dataclasses.dataclass(frozen=True)
class MarginRule:
    min_gain: float = 0.01
    standard_errors: float = 2.0
    metric: str = "macro_f1"

    def gain(self, challenger: str, incumbent_folds: FoldScores, challenger_folds: FoldScores) -> PairedGain:
        """Mean and standard error of the challenger's per-fold gain over the incumbent, on the folds
        both were scored on (a challenger confirmed on more folds is judged on all of them)."""
        shared = sorted(set(incumbent_folds) & set(challenger_folds))
        if len(shared) < 2:
            raise ValueError(f"{challenger!r} was scored on folds {sorted(challenger_folds)}, the incumbent on {sorted(incumbent_folds)}: "
                             f"a paired gain needs at least 2 shared folds, got {len(shared)}")
        gains = [challenger_folds[f][self.metric] - incumbent_folds[f][self.metric] for f in shared]
        mean = sum(gains) / len(gains)
        standard_error = math.sqrt(sum((g - mean) ** 2 for g in gains) / (len(gains) - 1) / len(gains))
        return PairedGain(challenger, mean, standard_error, max(self.min_gain, self.standard_errors * standard_error))

    def decide(self, incumbent: str, folds_by_variant: Mapping[str, FoldScores]) -> tuple[str, list[PairedGain]]:
        """The configuration to use (the incumbent unless a challenger wins; then the largest winning gain) and every challenger's gain."""
        if incumbent not in folds_by_variant:
            raise ValueError(f"incumbent {incumbent!r} has no validation scores; variants: {sorted(folds_by_variant)}")
        gains = [self.gain(name, folds_by_variant[incumbent], folds) for name, folds in folds_by_variant.items() if name != incumbent]
        winners = [g for g in gains if g.wins]
        return (max(winners, key=lambda g: g.mean).challenger if winners else incumbent), gains

    def decide_with_veto(self, incumbent: str, deciding: Mapping[str, FoldScores], vetoing: Mapping[str, FoldScores]) -> tuple[str, list[PairedGain]]:
        """``decide`` on the ``deciding`` folds, passing over a winner whose mean paired gain on the
        ``vetoing`` folds is negative (stop 35: all-people folds decide, the DS1 folds, whom DS2
        resembles, veto)."""
        _, gains = self.decide(incumbent, deciding)
        allowed = []
        for g in (g for g in gains if g.wins):
            if g.challenger not in vetoing or incumbent not in vetoing:
                raise ValueError(f"{g.challenger!r} wins but the veto folds lack its or the incumbent's scores")
            if self.gain(g.challenger, vetoing[incumbent], vetoing[g.challenger]).mean >= 0:
                allowed.append(g)
        return (max(allowed, key=lambda g: g.mean).challenger if allowed else incumbent), gains
