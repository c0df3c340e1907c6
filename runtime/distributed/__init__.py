"""Batch prediction and evaluation on Ray Data, beyond one machine (docs/RAY.md).

`BundlePredictor` is the callable class for a user's own ``Dataset.map_batches``; `predict_on_ray`
and `evaluate_on_ray` are the ``--ray`` commands' library; `ray_session` starts or joins Ray.
Importing this package does not import ray: each function imports it when called, and says what
to install where it is missing (`require_ray`).
"""

from __future__ import annotations

from onnxedge.runtime.distributed.connect import (
    AUTO,
    INSTALL,
    LOCAL,
    check_address,
    ray_session,
    require_ray,
)
from onnxedge.runtime.distributed.listing import expand_uris
from onnxedge.runtime.distributed.pipeline import (
    RayRun,
    evaluate_on_ray,
    predict_on_ray,
)
from onnxedge.runtime.distributed.predictor import BundlePredictor

__all__ = [
    "AUTO",
    "INSTALL",
    "LOCAL",
    "BundlePredictor",
    "RayRun",
    "check_address",
    "evaluate_on_ray",
    "expand_uris",
    "predict_on_ray",
    "ray_session",
    "require_ray",
]
