"""The device-side view of ``manifest.json``: the contract between export and device."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from edge_runtime.beats import BeatSpec


def layout_hash(layout: list[tuple[str, tuple[int, ...]]]) -> str:
    """Identifies a flat weight vector's layout: payloads for another layout are refused."""
    text = ";".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in layout)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Manifest:
    model_version: str
    class_names: tuple[str, ...]
    class_weights: tuple[float, ...]
    beat_spec: BeatSpec
    layout: tuple[tuple[str, tuple[int, ...]], ...]
    layout_hash: str
    parameters: int

    @classmethod
    def read(cls, path: Path | str) -> "Manifest":
        data = json.loads(Path(path).read_text())
        spec = data["beat_spec"]
        layout = tuple((entry["name"], tuple(entry["shape"])) for entry in data["weight_layout"])
        manifest = cls(
            model_version=data["model_version"],
            class_names=tuple(data["class_names"]),
            class_weights=tuple(data["class_weights"]),
            beat_spec=BeatSpec(**{**spec, "band_hz": tuple(spec["band_hz"])}),
            layout=layout,
            layout_hash=data["weight_layout_hash"],
            parameters=int(data["parameters"]),
        )
        if layout_hash(list(layout)) != manifest.layout_hash:
            raise ValueError(f"{path}: weight_layout_hash does not match weight_layout")
        return manifest
