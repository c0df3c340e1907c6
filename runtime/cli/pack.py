"""`onnxedge pack BUNDLE --out DIR [--no-golden] [--force]`: the command line of
`onnxedge.runtime.bundle.pack`."""

from __future__ import annotations

from pathlib import Path

import click

from onnxedge.runtime.cli.output import json_option, write_json
from onnxedge.runtime.names import shown


@click.command("pack")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Write the new bundle here."
)
@click.option(
    "--no-golden",
    is_flag=True,
    help="Leave golden.npz and golden_layers.npz behind (parity and localize then need the "
    "full bundle).",
)
@click.option("--force", is_flag=True, help="Replace a bundle that exists at --out.")
@json_option("What was packed as JSON.")
def pack_cmd(bundle: Path, out: Path, no_golden: bool, force: bool, json_path: Path | None) -> None:
    """Copy what a device needs from BUNDLE into a new bundle at --out: model.onnx, its external
    data, the variants, the manifest and (unless --no-golden) the golden data; every file's
    sha256 verified, the copy written atomically and opened as a bundle before it is reported.
    """
    from onnxedge.runtime.bundle.pack import pack_bundle

    if json_path is not None and str(json_path) != "-":
        report = Path(json_path).resolve()
        if report == out.resolve() or report.is_relative_to(out.resolve()):
            raise click.UsageError(  # the new bundle replaces the folder, or holds a stray file
                f"--json {json_path}: expected a file outside the bundle --out makes, found one "
                f"inside {out}; write it elsewhere"
            )
    result = pack_bundle(bundle, out, golden=not no_golden, force=force)
    for name, size in result.files.items():
        click.echo(f"{size:>12,}  {name}")
    left = f"; left out: {', '.join(result.left_out)}" if result.left_out else ""
    click.echo(f"packed {shown(bundle)} into {shown(out)}: {result.total_bytes:,} bytes{left}")
    write_json(json_path, result.to_dict())
