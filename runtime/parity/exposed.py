"""The check-only graph of localisation: a copy of ``model.onnx`` (or of a variant's ONNX file)
in memory whose every intermediate tensor is an output (`expose_intermediates`, as
`graph.with_logits_output` exposes the logits); the shipped model is never changed.
`ExposedModel` makes sessions of it on a parity `Target`, `run_exposed` runs one."""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxedge.runtime.bundle.outputs import logits_tensor, manifest_kind
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.classifier.classifier import check_external_data
from onnxedge.runtime.engines import DEFAULT_PRECISION, ONNXRUNTIME, open_session
from onnxedge.runtime.engines.onnxruntime.session import make_session
from onnxedge.runtime.errors import BundleError, OnnxEdgeError, first_line
from onnxedge.runtime.parity.run import _EXTERNAL_DATA_FOLDER
from onnxedge.runtime.parity.tolerances import Target
from onnxedge.runtime.variants.manifest import FP32, variant_key

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExposedTensor:
    """One intermediate tensor made an output: what made it and where it sits."""

    name: str
    node: str
    op_type: str
    index: int  # position of its node in the graph's (topological) order, from 1
    depth: int  # the longest path from a graph input, in nodes (its node's own output: 1)
    inputs: tuple[str, ...] = ()  # its node's inputs (graph inputs, initializers, tensors)


def expose_intermediates(
    model: onnx.ModelProto,
) -> tuple[onnx.ModelProto, tuple[ExposedTensor, ...], tuple[str, ...]]:
    """A copy of ``model`` that outputs every tensor a node of its main graph makes, those
    tensors in graph order, and the ones left out because their element type is unknown (an
    output needs one). ``model`` is not changed."""
    exposed = copy.deepcopy(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(exposed, strict_mode=False)
    except Exception as e:  # onnx's own error types: a graph it cannot infer
        log.info("shape inference failed, exposing the tensors of known type only: %s", e)
        inferred = exposed
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)
        if v.type.HasField("tensor_type")
    }
    depth: dict[str, int] = {}
    tensors: list[ExposedTensor] = []
    unknown: list[str] = []
    outputs = {o.name for o in exposed.graph.output}
    for i, node in enumerate(exposed.graph.node, start=1):
        d = 1 + max((depth.get(name, 0) for name in node.input if name), default=0)
        for name in node.output:
            if not name:
                continue
            depth[name] = d
            if not types.get(name) and name not in outputs:
                unknown.append(name)
                continue
            inputs = tuple(x for x in node.input if x)
            tensors.append(ExposedTensor(name, node.name or f"#{i}", node.op_type, i, d, inputs))
            if name not in outputs:
                exposed.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, types[name], None)
                )
    return exposed, tuple(tensors), tuple(unknown)


@dataclasses.dataclass(frozen=True)
class ExposedModel:
    """A bundle's graph (``model.onnx``, or the variant's file at ``model_path``) with its
    tensors exposed, and what a row judges: the output and the logits tensor
    (`onnxedge.runtime.bundle.outputs`)."""

    bundle: Bundle
    data: bytes
    tensors: tuple[ExposedTensor, ...]
    unexposed: tuple[str, ...]
    kind: str
    output_name: str
    logits_name: str
    model_path: Path
    variant: str = FP32

    @classmethod
    def of(
        cls, bundle: Bundle, variant: str | None = None, *, path: Path | None = None
    ) -> ExposedModel:
        """``variant``: None or ``fp32`` for ``model.onnx``, else a variant's ONNX file
        (`Bundle.variant_model` verifies it); ``path``: another file of ``model.onnx``'s graph
        instead (a changed copy, as `make parity-matrix` makes)."""
        check_external_data(bundle)
        path = path or bundle.variant_model(variant)
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:
            raise BundleError(f"{path} is not an ONNX model: {first_line(e)}") from None
        kind = manifest_kind(bundle.manifest.get("output"))
        exposed, tensors, unexposed = expose_intermediates(model)
        return cls(
            bundle=bundle,
            data=exposed.SerializeToString(),
            tensors=tensors,
            unexposed=unexposed,
            kind=kind,
            output_name=model.graph.output[0].name,
            logits_name=logits_tensor(model, kind),
            model_path=path,
            variant=variant_key(variant),
        )

    @property
    def max_depth(self) -> int:
        return max((t.depth for t in self.tensors), default=1)

    def session(self, target: Target) -> Any:
        """A session on ``target``. onnxruntime runs the exposed copy, its external data read
        from the bundle's directory; another engine (OpenVINO) reads the shipped file and is
        asked for the tensors as extra outputs."""
        if target.engine != ONNXRUNTIME:
            return open_session(
                target.engine,
                self.model_path,
                provider=target.provider,
                precision=target.precision or DEFAULT_PRECISION,
                extra_outputs=[t.name for t in self.tensors if t.name != self.output_name],
            )
        config = target.session_config()
        entries = {**config.config_entries, _EXTERNAL_DATA_FOLDER: str(self.model_path.parent)}
        return make_session(self.data, dataclasses.replace(config, config_entries=entries))


def run_exposed(session: Any, input_name: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of an exposed session, by name; the engine's errors as `OnnxEdgeError`."""
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(None, {input_name: inputs})
    except Exception as e:  # the engine's own error types
        raise OnnxEdgeError(
            f"the graph with its tensors exposed failed to run: {first_line(e)}"
        ) from None
    return dict(zip(names, values, strict=True))
