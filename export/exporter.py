"""torch.nn.Module -> onnx.ModelProto with a dynamic batch axis, with either exporter.

The sequence follows timm's: eval mode, export, `onnx.checker.check_model(full_check=True)`; the
numerical comparison with ONNX Runtime happens in the pipeline after the graph passes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import onnx
import onnx_ir as ir

from onnxedge.export.batch import BATCH_DIM, name_batch_dim
from onnxedge.runtime.errors import OnnxEdgeError, first_line

EXPORTERS = ("dynamo", "torchscript")
SPATIAL_DIMS = ("height", "width")  # the input's H and W with --dynamic-spatial
DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18  # the dynamo exporter builds opset 18 graphs and cannot go lower reliably
TORCHSCRIPT_OPSETS = range(9, 21)


def check_known_opset(opset: int) -> None:
    """An opset the installed onnx does not know is refused before any work (99999 ran the whole
    export and failed at its end)."""
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise OnnxEdgeError(
            f"expected an opset from 7 to {newest} (the newest onnx {onnx.__version__} knows), "
            f"found {opset}"
        )


def check_opset(exporter: str, opset: int) -> None:
    check_known_opset(opset)
    if exporter not in EXPORTERS:
        raise OnnxEdgeError(
            f"unknown exporter {exporter!r}; expected one of: {', '.join(EXPORTERS)}"
        )
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise OnnxEdgeError(
            f"the dynamo exporter needs opset >= {DYNAMO_MIN_OPSET}, found --opset {opset}; "
            "use --exporter torchscript for older opsets"
        )
    if exporter == "torchscript" and opset not in TORCHSCRIPT_OPSETS:
        raise OnnxEdgeError(
            f"the torchscript exporter supports opsets {TORCHSCRIPT_OPSETS.start}-"
            f"{TORCHSCRIPT_OPSETS.stop - 1}, found --opset {opset}"
        )


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters print progress and warnings about optional packages; keep the CLI readable."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_module(
    module: object,
    input_shape: Sequence[int],
    *,
    exporter: str = "dynamo",
    opset: int = 18,
    input_name: str = "input",
    output_name: str = "prob",
    example_batch: int = 2,
    dynamic_spatial: bool = False,
) -> onnx.ModelProto:
    """Export an eval-mode module whose input is ``[batch, *input_shape]``.

    The batch dim of the input and the output is the one symbol ``batch``. An example batch of 2
    keeps the exporters from specialising on 1. With ``dynamic_spatial`` the input's H and W are
    the symbols ``height`` and ``width`` too (the exporter fails, in one line, on a model whose
    graph cannot take other sizes).
    """
    import torch

    check_opset(exporter, opset)
    module.eval()
    example = torch.zeros(example_batch, *input_shape)
    try:
        with _quiet_exporter(), torch.no_grad():
            if exporter == "dynamo":
                dims = (_dynamo_dims(dynamic_spatial),)
                program = torch.onnx.export(
                    _global_means_as_means(module, example, dims),
                    (example,),
                    input_names=[input_name],
                    output_names=[output_name],
                    dynamic_shapes=dims,
                    opset_version=opset,
                    dynamo=True,
                    optimize=True,
                    verbose=False,
                )
                model = program.model_proto
            else:
                buffer = io.BytesIO()
                torch.onnx.export(
                    module,
                    (example,),
                    buffer,
                    input_names=[input_name],
                    output_names=[output_name],
                    dynamic_axes={
                        input_name: {
                            0: BATCH_DIM,
                            **(
                                dict(zip((2, 3), SPATIAL_DIMS, strict=True))
                                if dynamic_spatial
                                else {}
                            ),
                        },
                        output_name: {0: BATCH_DIM},
                    },
                    opset_version=opset,
                    dynamo=False,
                    do_constant_folding=True,
                )
                model = onnx.load_from_string(buffer.getvalue())
    except OnnxEdgeError:
        raise
    except Exception as e:
        raise OnnxEdgeError(f"torch.onnx.export ({exporter}) failed: {first_line(e)}") from None
    actual = graph_opset(model)
    if actual != opset:
        raise OnnxEdgeError(
            f"the {exporter} exporter produced opset {actual} instead of the requested {opset}"
        )
    model, _ = name_batch_dim(model, BATCH_DIM)  # torch names the output's apart (s0)
    onnx.checker.check_model(model, full_check=True)
    return model


def _global_means_as_means(module: Any, example: Any, dims: tuple[Any, ...]) -> Any:
    """``module`` as a torch.export program whose ``adaptive_avg_pool2d`` to 1x1 is a plain mean
    over H and W, or ``module`` itself where torch.export cannot take it (torch.onnx.export then
    tries its own ways). torch's own decomposition restores the input's memory format after the
    mean with an ``as_strided``; on a channels-last map (a LayerNorm over channels through
    permutes, as ConvNeXt's) the exporter writes that as a Gather over computed indices between
    the pool and the classifier, which nothing recognises as the head (the values are the
    mean's: a [N, C, 1, 1] map has one order whatever its strides)."""
    import torch

    aten = torch.ops.aten

    def global_mean(x: Any, output_size: Sequence[int]) -> Any:
        if list(output_size) == [1, 1]:
            return torch.mean(x, dim=(-2, -1), keepdim=True)
        return aten._adaptive_avg_pool2d.default(x, output_size)

    try:
        program = torch.export.export(module, (example,), dynamic_shapes=dims)
        return program.run_decompositions({aten.adaptive_avg_pool2d.default: global_mean})
    except Exception as e:  # any failure: torch.onnx.export's own strategies run
        logging.getLogger(__name__).debug("torch.export.export: %s", first_line(e))
        return module


def _dynamo_dims(dynamic_spatial: bool) -> dict[int, object]:
    import torch

    dims: dict[int, object] = {0: torch.export.Dim(BATCH_DIM, min=1, max=65536)}
    if dynamic_spatial:
        for axis, name in zip((2, 3), SPATIAL_DIMS, strict=True):
            dims[axis] = torch.export.Dim(name, min=8, max=8192)
    return dims


def rename_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """The model with its (first) graph output called ``name``; the proto itself is not changed."""
    if model.graph.output[0].name == name:
        return model
    ir_model = ir.from_proto(model)
    taken = {v.name for node in ir_model.graph for v in node.outputs} | {
        v.name for v in ir_model.graph.inputs
    }
    if name in taken:
        raise OnnxEdgeError(f"cannot name the output {name!r}: the graph has a tensor of that name")
    ir_model.graph.outputs[0].name = name
    return ir.to_proto(ir_model)


def graph_opset(model: onnx.ModelProto) -> int:
    """`default_opset`, where the model imports one."""
    from onnxedge.runtime.check.check import default_opset

    opset = default_opset(model)
    if not opset:
        raise OnnxEdgeError("the model imports no default-domain opset")
    return opset
