"""`onnxedge inspect MODEL.onnx|BUNDLE [--json [FILE]]`: what a model or a bundle holds."""

from __future__ import annotations

import click

from onnxedge.runtime.check.inspect import inspect_path
from onnxedge.runtime.cli.output import json_option, write_json
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
        if golden:
            lines.append(
                f"golden    {golden.get('file')}: batch sizes {golden.get('batch_sizes')}, "
                f"images {golden.get('images')}"
            )
        for name, v in found.bundle["variants"].items():
            gate = "gate passed" if v["gated"] else "not gated (--no-gate)"
            lines.append(
                f"variant   {name}: {escape(v['file'])}, {v['precision']} for "
                f"{','.join(v['providers'])}, {gate}"
            )
        if not found.bundle["variants"]:
            lines.append("variant   none (onnxedge optimize adds them)")
    for line in lines:
        click.echo(line)
    write_json(json_path, found.to_dict())
