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
    """``decay`` 0 releases the last round's model; otherwise avg <- decay * avg + (1 - decay) * latest after each applied round."""

    def __init__(self, decay: float, initial: tff.learning.models.ModelWeights):
        if not 0 <= decay < 1:
            raise ValueError(f"release decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.average = _copy(initial)

    def update(self, latest: tff.learning.models.ModelWeights) -> None:
        if self.decay == 0:
            self.average = _copy(latest)
            return
        self.average = tff.learning.models.ModelWeights(
            *([self.decay * a + (1 - self.decay) * np.asarray(b, np.float64) for a, b in zip(old, new)]
              for old, new in ((self.average.trainable, latest.trainable), (self.average.non_trainable, latest.non_trainable)))
        )

    def leaves(self) -> list[np.ndarray]:
        """For the checkpoint: the average, trainable then non-trainable."""
        return [*self.average.trainable, *self.average.non_trainable]

    def restore(self, leaves: list[np.ndarray]) -> None:
        count = len(self.average.trainable)
        self.average = tff.learning.models.ModelWeights([np.asarray(a, np.float64) for a in leaves[:count]], [np.asarray(a, np.float64) for a in leaves[count:]])

    def released(self) -> tff.learning.models.ModelWeights:
        """The model to evaluate, save and export (float32, as Keras holds it)."""
        return tff.learning.models.ModelWeights(
            [a.astype(np.float32) for a in self.average.trainable], [a.astype(np.float32) for a in self.average.non_trainable])


def _copy(weights: tff.learning.models.ModelWeights) -> tff.learning.models.ModelWeights:
    return tff.learning.models.ModelWeights([np.array(a, np.float64) for a in weights.trainable], [np.array(a, np.float64) for a in weights.non_trainable])
