"""`make testdata-zoo`: the onnx package's test classifiers, through `onnxedge import`.

``onnx/backend/test/data/light/`` holds Caffe2-era ONNX files of classic ImageNet classifiers
(opset 9, batch fixed at 1), their weights written as ``ConstantOfShape`` of 0.02 so that the
files stay small. With every weight the same, every class scores the same and parity's labels
are ties; so each file is

1. given random weights (`random_weights`, seed 0): each ``ConstantOfShape`` becomes an
   initializer of its shape, scaled for the node that reads it (He's normal for a convolution's
   or a fully connected layer's weights, a batch norm's scale and variance near 1, small
   biases, shifts and means), then each convolution and fully connected layer scaled in turn
   so that its output's RMS is 1 on a normal input (`_unit_rms`: outputs that do not saturate
   the softmax), an onnx_ir rewrite of the graph, nothing else changed (at IR 3,
   as these files are, an initializer is a graph input too: Caffe2's files wrote real weights
   so);
2. imported by `import_bundle` (what ``onnxedge import`` runs), ImageNet's mean and std, the
   float64 reference's budget `REFERENCE_BUDGET_S` (``--reference-budget``);
3. judged by `cpu_parity` (``onnxedge parity`` on the CPU EP at the golden batch sizes).

A file whose classifier is fully connected over a flattened feature map (AlexNet, VGG-19,
ZFNet-512) has no GAP head to lower: import must refuse it, naming the pool it found
(`TestdataEntry.refused`). A healthy GAP model that import refuses or parity fails, or an FC
model that import takes, is a FAILED row. The table (``--out docs/TESTDATA_ZOO.md``) gives the
head's rewrite, the reference, the seconds of each step, parity's largest errors and the
verdict, with the command, date and CPU model.

    python -m onnxedge.export.testdata_zoo --out docs/TESTDATA_ZOO.md [--only inception_v1]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as ir_common_passes
import onnxruntime as ort

from onnxedge.export.parity_matrix import IMAGENET
from onnxedge.export.zoo import (
    cpu_parity,
    errors_cell,
    fmt,
    load_average,
    result_cell,
    run_lines,
    say,
    table_row,
    write_table,
    zoo_arguments,
)
from onnxedge.runtime.errors import OnnxEdgeError, first_line

SEED = 0
# The float64 reference's budget (import's default is 120 s): these files are larger than a
# user's usual one, and a float64 truth is the stronger judge where it takes minutes, not hours.
REFERENCE_BUDGET_S = 300.0
_BIAS_STD = 0.01  # biases, shifts and means: small beside the activations
_SCALE_RANGE = (0.5, 1.5)  # a batch norm's scale and variance, an affine's multiplier
_CENTRED_INPUTS = 8  # normal inputs whose mean class scores the classifier's bias takes away
_INITIALIZERS_APART_IR = 4  # before IR 4 every initializer is a graph input too


@dataclasses.dataclass(frozen=True)
class TestdataEntry:
    name: str  # the file is light_<name>.onnx
    family: str
    refused: str = ""  # "": import must take it; else a phrase its refusal must contain

    __test__ = False  # not a pytest class

    def path(self, folder: Path | None = None) -> Path:
        return (folder or light_folder()) / f"light_{self.name}.onnx"


_NO_GAP = "pools the last feature map into the classifier"  # check's gap_head line
TESTDATA_ZOO: tuple[TestdataEntry, ...] = (
    TestdataEntry("squeezenet", "1x1-conv classifier before the pool"),
    TestdataEntry("inception_v1", "GoogLeNet, padded 7x7 average pool"),
    TestdataEntry("inception_v2", "batch norm, 7x7 average pool"),
    TestdataEntry("resnet50", "residual, batch norm"),
    TestdataEntry("densenet121", "dense blocks, batch norm as Mul and Add"),
    TestdataEntry("shufflenet", "grouped 1x1 convs, channel shuffle"),
    TestdataEntry("bvlc_alexnet", "fully connected head", refused=_NO_GAP),
    TestdataEntry("vgg19", "fully connected head", refused=_NO_GAP),
    TestdataEntry("zfnet512", "fully connected head", refused=_NO_GAP),
)


def light_folder() -> Path:
    """Where the installed onnx package keeps its light test models."""
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def random_weights(
    model: onnx.ModelProto, seed: int = SEED, *, unit_rms: bool = True
) -> onnx.ModelProto:
    """1.: ``model`` with each ``ConstantOfShape`` of a constant shape replaced by an initializer
    of random values of that shape (module docstring), with ``unit_rms`` then scaled layer by
    layer (`_unit_rms`); an error where there is none."""
    rng = np.random.default_rng(seed)
    graph = ir.from_proto(model)
    drawn: dict[str, ir.Value] = {}
    shapes: list[ir.Value] = []
    for node in list(graph.graph):
        if node.op_type != "ConstantOfShape":
            continue
        shape_tensor = ir.convenience.get_const_tensor(node.inputs[0])
        if shape_tensor is None:
            continue
        shape = tuple(int(d) for d in shape_tensor.numpy())
        shapes.append(node.inputs[0])
        old = node.outputs[0]
        array = _draw(rng, shape, _reader(old)).astype(np.float32)
        new = ir.Value(
            name=old.name,
            shape=ir.Shape(shape),
            type=ir.TensorType(ir.DataType.FLOAT),
            const_value=ir.tensor(array, name=old.name),
        )
        old.name = None
        old.replace_all_uses_with(new)
        graph.graph.remove(node, safe=True)
        graph.graph.register_initializer(new)
        if graph.ir_version < _INITIALIZERS_APART_IR:
            graph.graph.inputs.append(new)  # as Caffe2's converter wrote real weights
        drawn[new.name] = new
    if not drawn:
        raise OnnxEdgeError("expected weights written as ConstantOfShape, found none")
    for value in shapes:  # the shapes' initializers (and, at IR 3, graph inputs) left unread
        if not value.uses() and value.name in graph.graph.initializers:
            if value in graph.graph.inputs:
                graph.graph.inputs.remove(value)
            graph.graph.initializers.pop(value.name)
    ir_common_passes.RemoveUnusedNodesPass()(graph)
    if unit_rms:
        _unit_rms(graph, drawn, rng)
    return ir.to_proto(graph)


def _unit_rms(model: ir.Model, drawn: dict[str, ir.Value], rng: np.random.Generator) -> None:
    """Scale each convolution's and fully connected layer's drawn weights and bias, in graph
    order, so that its output's RMS on a standard normal input is 1 (the idea of Mishkin and
    Matas's LSUV initialisation): He's scale alone lets residual sums grow until the softmax
    saturates (ResNet-50's logits reach 1e4, ShuffleNet's 1e6, every row one class). Measured
    with ONNX Runtime on a copy of the graph whose weights are inputs fed as they are scaled."""
    layers = []
    for node in model.graph:  # topological order
        if node.op_type not in ("Conv", "Gemm") or node.outputs[0].name is None:
            continue
        weight = _drawn_source(node.inputs[1], drawn) if len(node.inputs) > 1 else None
        if weight is None:
            continue
        bias = _drawn_source(node.inputs[2], drawn) if len(node.inputs) > 2 else None
        layers.append((node.outputs[0].name, weight, bias))
    if not layers:
        return
    probe = ir.from_proto(ir.to_proto(model))  # a copy to measure on
    named = {v.name: v for n in probe.graph for v in n.outputs if v.name}
    for name, _, _ in layers:
        probe.graph.outputs.append(named[name])
    for name in drawn:  # plain inputs (at IR 3 ONNX Runtime feeds no initializer)
        value = probe.graph.initializers.pop(name)
        if value not in probe.graph.inputs:
            probe.graph.inputs.append(value)
    feeds = {}
    for value in probe.graph.inputs:
        if value.name in probe.graph.initializers or value.name in drawn:
            continue
        dims = [d if isinstance(d, int) else 1 for d in value.shape.dims]
        feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    weights = {name: value.const_value.numpy().copy() for name, value in drawn.items()}
    options = ort.SessionOptions()  # the graph as written: no weight folded away
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        ir.to_proto(probe).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    for index, (output, weight, bias) in enumerate(layers):
        (y,) = session.run([output], {**feeds, **weights})
        if index == len(layers) - 1 and bias is not None:  # the classifier: centred
            y = _centre_classifier(y, session, output, feeds, weights, bias, rng)
        rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
        if not np.isfinite(rms) or rms == 0:
            continue
        for name in filter(None, (weight, bias)):
            weights[name] = (weights[name] / rms).astype(np.float32)
    for name, value in drawn.items():
        value.const_value = ir.tensor(weights[name], name=name)


def _centre_classifier(first, session, output, feeds, weights, bias, rng) -> np.ndarray:
    """The classifier's bias less each class's mean score over `_CENTRED_INPUTS` normal inputs,
    and its output on the first of them after that. A random network scores every input alike
    (its pooled features, after ReLUs, share one large mean): without this, every row of the
    golden data has the same class and parity's label check compares one class with itself."""
    outputs = [first]  # the classifier's output on ``feeds``, already computed
    for _ in range(_CENTRED_INPUTS - 1):
        other = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in feeds.items()}
        outputs.append(session.run([output], {**other, **weights})[0])
    stacked = np.concatenate(outputs).astype(np.float64)  # [K, C, ...]
    mean = stacked.mean(axis=tuple(a for a in range(stacked.ndim) if a != 1))
    if mean.shape != weights[bias].shape:
        return outputs[0]
    weights[bias] = (weights[bias] - mean).astype(np.float32)
    shape = (1, -1) + (1,) * (outputs[0].ndim - 2)
    return outputs[0] - mean.reshape(shape)


def _drawn_source(value: ir.Value | None, drawn: dict[str, ir.Value]) -> str | None:
    """The name of the drawn weight ``value`` is, directly or through the Reshape or Unsqueeze
    Caffe2's converter puts before a Gemm; None where it is not one."""
    if value is None:
        return None
    if value.name in drawn and drawn[value.name] is value:
        return value.name
    producer = value.producer()
    if producer is not None and producer.op_type in ("Reshape", "Unsqueeze"):
        return _drawn_source(producer.inputs[0], drawn)
    return None


def _reader(value: ir.Value) -> tuple[str, int, ir.Node | None]:
    """The op and input index of the first node reading ``value`` (through an Unsqueeze or a
    Reshape, which Caffe2's converter puts before a Mul, an Add or a Gemm), and that node."""
    for use in value.uses():
        node, index = use.node, use.idx
        if node.op_type in ("Unsqueeze", "Reshape") and index == 0:
            op, inner, inner_node = _reader(node.outputs[0])
            return (op, inner, inner_node) if op else (node.op_type, index, node)
        return node.op_type, index, node
    return "", 0, None


def _draw(rng: np.random.Generator, shape: tuple[int, ...], reader) -> np.ndarray:
    op, index, node = reader
    if op == "Conv" and index == 1:
        return rng.normal(0.0, np.sqrt(2.0 / max(1, int(np.prod(shape[1:])))), shape)
    if op == "Gemm" and index == 1:
        trans_b = node.attributes.get_int("transB", 0) if node is not None else 0
        fan_in = shape[-1] if trans_b else shape[0]
        return rng.normal(0.0, np.sqrt(2.0 / max(1, fan_in)), shape)
    if (op == "BatchNormalization" and index in (1, 4)) or op == "Mul":
        return rng.uniform(*_SCALE_RANGE, shape)
    return rng.normal(0.0, _BIAS_STD, shape)  # biases, shifts, means


@dataclasses.dataclass(frozen=True)
class TestdataRow:
    entry: TestdataEntry
    status: str  # "passed" | "refused" (as expected) | "failed" | "skipped"
    reason: str = ""
    head: str = ""
    reference: str = ""
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    parity_prob: float | None = None
    parity_logits: float | None = None

    __test__ = False


def run_entry(
    entry: TestdataEntry,
    out_dir: Path,
    say: Callable[[str], None],
    folder: Path | None = None,
    reference_budget_s: float = REFERENCE_BUDGET_S,
) -> TestdataRow:
    """Random weights, import and parity of one entry (each step timed), judged against what
    the entry expects."""
    from onnxedge.export.importer import import_bundle

    seconds: dict[str, float] = {}
    source = entry.path(folder)
    if not source.is_file():
        return TestdataRow(entry, "skipped", f"{source} is not in this onnx package")
    row = TestdataRow(entry, "failed")
    step = "weights"
    try:
        started = time.perf_counter()
        out_dir.mkdir(parents=True, exist_ok=True)
        weighted = out_dir / f"{entry.name}-random.onnx"
        onnx.save(random_weights(onnx.load(source), unit_rms=not entry.refused), weighted)
        seconds["weights"] = time.perf_counter() - started

        step = "import"
        say(f"{entry.name}: import")
        started = time.perf_counter()
        try:
            result = import_bundle(
                weighted,
                out=out_dir / entry.name,
                preprocessing=IMAGENET,
                golden_layers_budget_mb=None,
                reference_budget_s=reference_budget_s,
            )
        except OnnxEdgeError as e:
            seconds["import"] = time.perf_counter() - started
            if entry.refused and entry.refused in str(e):
                return TestdataRow(entry, "refused", _one_line(e), seconds=seconds)
            raise
        seconds["import"] = time.perf_counter() - started
        ref = result.reference
        row = dataclasses.replace(
            row,
            head="; ".join(result.rewrites),
            reference=ref.precision + (f" ({ref.reason})" if ref.reason else ""),
        )
        if entry.refused:
            raise OnnxEdgeError(f"expected a refusal ({entry.refused!r}), import took it")

        step = "parity"
        say(f"{entry.name}: parity")
        started = time.perf_counter()
        prob, logits, failure = cpu_parity(out_dir / entry.name)
        seconds["parity"] = time.perf_counter() - started
        row = dataclasses.replace(row, parity_prob=prob, parity_logits=logits)
        if failure:
            raise OnnxEdgeError(failure)
        return dataclasses.replace(row, status="passed", seconds=seconds)
    except OnnxEdgeError as e:
        return dataclasses.replace(row, reason=f"{step}: {_one_line(e)}", seconds=seconds)
    except Exception as e:  # a file's own failure: named in its row
        return dataclasses.replace(
            row, reason=f"{step}: {type(e).__name__}: {first_line(e)}", seconds=seconds
        )


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())  # a table cell: parity's summary spans lines


def render(rows: Sequence[TestdataRow], *, command: str, machine: str, date: str) -> str:
    lines = [
        "# The onnx package's test classifiers, through `onnxedge import`",
        "",
        "The Caffe2-era classifiers under `onnx/backend/test/data/light/` (opset 9, batch 1), "
        f"given random weights (seed {SEED}; the files write every weight as 0.02), then "
        "`import_bundle` (`onnxedge import`, ImageNet's mean and std) and `onnxedge parity` "
        "(CPU EP). A fully connected head has no global average pool to lower: import must "
        "refuse it (REFUSED, as expected). Generated by `make testdata-zoo`; do not edit by "
        "hand. The seconds are wall-clock on the machine below.",
        "",
        *run_lines(command, date, machine),
        "",
        "| model | family | head | reference | import s | parity s "
        "| parity err prob / logits | result |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        s = r.seconds
        cells = [
            r.entry.name,
            r.entry.family,
            r.head or "–",
            r.reference or "–",
            fmt(s.get("import"), ".1f"),
            fmt(s.get("parity"), ".1f"),
            errors_cell(r),
            result_cell(r),
        ]
        lines.append(table_row(cells))
    good = sum(r.status in ("passed", "refused") for r in rows)
    lines += ["", f"{good} of {len(rows)} rows as expected.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    prog = "python -m onnxedge.export.testdata_zoo"

    def budget(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--reference-budget", type=float, default=REFERENCE_BUDGET_S, help="float64, seconds"
        )

    args, chosen = zoo_arguments(
        argv, prog, __doc__, TESTDATA_ZOO, out=Path("docs/TESTDATA_ZOO.md"),
        bundles=Path("build/testdata_zoo"), more=budget,
    )  # fmt: skip
    load_before = load_average()
    rows = []
    for entry in chosen:
        row = run_entry(entry, args.bundles, say, reference_budget_s=args.reference_budget)
        say(f"{entry.name}: {row.status.upper()} {row.reason}")
        rows.append(row)
    return write_table(rows, prog, argv, render, args.out, load_before)


if __name__ == "__main__":
    sys.exit(main())
