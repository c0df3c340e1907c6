"""Model definitions and the registry the exporter looks models up in (`onnxedge.models`)."""

from __future__ import annotations

from onnxedge.models.registry import ModelSpec, available_models, get_model_spec, register_model

__all__ = ["ModelSpec", "available_models", "get_model_spec", "register_model"]
