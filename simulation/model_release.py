"""Which global model a run releases: the last round's, or a moving average of the rounds' models.

With server momentum the global model swings from round to round (validation macro-F1 of the
fold models moved by up to 0.09 between evaluations 5 rounds apart), so the released model is a
draw from that swing. An exponential moving average of the rounds' global models (Polyak-Ruppert
averaging of the iterates) releases their centre instead. It only reads the global model: the
clients still train from the round's model, so training itself is unchanged.
"""
from __future__ import annotations

import numpy as np
import tensorflow_federated as tff


class ReleasedModel:
    """avg <- decay * avg + (1 - decay) * latest after each applied round; ``decay`` 0 releases the
    last round's model exactly (0 * avg + 1 * latest is latest, bit for bit, in float64)."""

    def __init__(self, decay: float, initial: tff.learning.models.ModelWeights):
        if not 0 <= decay < 1:
            raise ValueError(f"release decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.average = _as(initial, np.float64)

    def update(self, latest: tff.learning.models.ModelWeights) -> None:
        latest = _as(latest, np.float64)
        self.average = tff.learning.models.ModelWeights(
            *([self.decay * a + (1 - self.decay) * b for a, b in zip(old, new)]
              for old, new in ((self.average.trainable, latest.trainable), (self.average.non_trainable, latest.non_trainable)))
        )

    def leaves(self) -> list[np.ndarray]:
        """For the checkpoint: the average, trainable then non-trainable."""
        return [*self.average.trainable, *self.average.non_trainable]

    def restore(self, leaves: list[np.ndarray]) -> None:
        count = len(self.average.trainable)
        self.average = _as(tff.learning.models.ModelWeights(leaves[:count], leaves[count:]), np.float64)

    def released(self) -> tff.learning.models.ModelWeights:
        """The model to evaluate, save and export (float32, as Keras holds it)."""
        return _as(self.average, np.float32)


def _as(weights: tff.learning.models.ModelWeights, dtype: type) -> tff.learning.models.ModelWeights:
    """A copy of ``weights`` in ``dtype``."""
    return tff.learning.models.ModelWeights([np.array(a, dtype) for a in weights.trainable], [np.array(a, dtype) for a in weights.non_trainable])
