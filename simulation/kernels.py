"""Which CPU kernel set TensorFlow runs here, for run summaries and benchmark results.

TensorFlow 2.14 turns its oneDNN kernels on by default only on CPUs with AVX-512 VNNI/BF16
or AMX; elsewhere (most AMD and laptop CPUs, ARM) and under ``TF_ENABLE_ONEDNN_OPTS=0`` it
runs its default Eigen kernels, which lack some gradients (grouped convolutions). fedbeat's
models run on both (``models/stacked_classifier.py``); results say which one was measured.
The TFF worker inherits this process's environment and CPU, so it runs the same set.
"""
from __future__ import annotations

import platform


def tensorflow_cpu_kernels() -> str:
    """'onednn' or 'default' (Eigen): the kernel set of this process's TensorFlow."""
    from tensorflow.python.util import _pywrap_util_port  # TF's own switch, read after its env/CPU checks

    return "onednn" if _pywrap_util_port.IsMklEnabled() else "default"


def platform_summary() -> dict[str, str]:
    """Architecture and TensorFlow CPU kernel set, as written to summary.json and benchmark JSON."""
    return {"machine": platform.machine(), "tensorflow_cpu_kernels": tensorflow_cpu_kernels()}
