"""`onnxedge inspect MODEL.onnx|BUNDLE [--json [FILE]]`: what a model or a bundle holds."""

from __future__ import annotations

from typing import Any

import click

from onnxedge.runtime.check.inspect import inspect_path
from onnxedge.runtime.cli.output import json_option, write_json
from onnxedge.runtime.lines import fit
from onnxedge.runtime.names import escape


def _tensors(kind: str, tensors: tuple[dict, ...]) -> list[str]:
    return [
        f"{kind:<10}{escape(t['name'])}  {t['dtype']}  [{', '.join(map(str, t['shape']))}]"
        for t in tensors
    ]


@click.command("inspect")
@click.argument("target", type=click.Path(path_type=str))
@json_option("What was found, as JSON.")
def inspect_cmd(target: str, json_path: str | None) -> None:
    """Say what MODEL.onnx or BUNDLE holds: inputs and outputs, opset, op counts, parameters and
    size, the GAP head `onnxedge check` finds; for a bundle also its manifest's summary, its
    variants with their gates, and its golden data. Reads only."""
    found = inspect_path(target)
    lines = [f"{escape(found.path)}", *_tensors("input", found.inputs)]
    lines += _tensors("output", found.outputs)
    lines.append("opset     " + ", ".join(f"{d} {v}" for d, v in found.opsets.items()))
    nodes = sum(found.op_counts.values())
    lines.append(
        f"ops       {nodes} nodes: " + ", ".join(f"{op} {n}" for op, n in found.op_counts.items())
    )
    lines.append(f"params    {found.parameters:,}   model size {found.size_bytes / 1e6:.2f} MB")
    verdict = "PASSED" if found.head["passed"] else "FAILED"
    lines.append(f"head      {verdict} | {found.head['detail']}")
    if found.bundle is not None:
        manifest = found.bundle["manifest"]
        lines.append(
            "manifest  "
            + ", ".join(
                f"{k} {manifest[k]}"
                for k in ("model", "head", "exporter", "opset")
                if k in manifest
            )
            + f", output {found.bundle['output_kind']}"
        )
        for name, size in found.bundle["files"].items():
            lines.append(f"file      {escape(name)}  {size / 1e6:.2f} MB")
        golden = found.bundle["golden"]
        if "error" in golden:
            lines.append(f"golden    the manifest's golden block: {golden['error']}")
        elif golden:
            lines.append(
                f"golden    {golden.get('file')}: batch sizes {golden.get('batch_sizes')}, "
                f"{_images(golden.get('images'))}"
            )
        for name, v in found.bundle["variants"].items():
            lines.append(
                f"variant   {name}: {escape(v['file'])}, {v['precision']} for "
                f"{','.join(v['providers'])}, {_gate(v)}"
            )
        if not found.bundle["variants"]:
            lines.append("variant   none (onnxedge optimize adds them)")
    for line in lines:
        click.echo(fit(line, subsequent_indent=" " * 10))
    write_json(json_path, found.to_dict())


def _images(images: object) -> str:
    """The golden images by count and the first and last name (all of them are in --json)."""
    if not isinstance(images, list) or not images:
        return f"images {images}"
    if len(images) <= 2:
        return f"images {', '.join(map(escape, map(str, images)))}"
    return f"{len(images)} images ({escape(str(images[0]))} … {escape(str(images[-1]))})"


def _gate(variant: dict[str, Any]) -> str:
    """A variant's gate in a few words: ``gate PASSED on 600 images (CPU): agreement 99.67%,
    |Δp| max 0.071``; ``not gated (--no-gate)`` with what it measured."""
    gate = variant["entry"].get("gate")
    verdict = "gate PASSED" if variant["gated"] else "not gated (--no-gate)"
    if not isinstance(gate, dict):
        return verdict + (": no figures recorded" if variant["gated"] else "")
    figures = []
    if isinstance(gate.get("label_agreement"), (int, float)):
        figures.append(f"agreement {100 * gate['label_agreement']:.2f}%")
    if isinstance(gate.get("max_prob_error"), (int, float)):
        figures.append(f"|Δp| max {gate['max_prob_error']:.2g}")
    where = f" on {gate.get('images')} images" if gate.get("images") else ""
    short = str(gate.get("provider") or "").removesuffix("ExecutionProvider")
    provider = f" ({short})" if short else ""
    return f"{verdict}{where}{provider}: {', '.join(figures)}" if figures else verdict
