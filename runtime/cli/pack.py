"""`onnxedge pack BUNDLE --out DIR [--no-golden] [--force]`: the command line of
`onnxedge.runtime.bundle.pack`."""

from __future__ import annotations

import json
from pathlib import Path

import click


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
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write what was packed as JSON.",
)
def pack_cmd(bundle: Path, out: Path, no_golden: bool, force: bool, json_path: Path | None) -> None:
    """Copy what a device needs from BUNDLE into a new bundle at --out: model.onnx, its external
    data, the variants, the manifest and (unless --no-golden) the golden data; every file's
    sha256 verified, the copy written atomically and opened as a bundle before it is reported.
    """
    from onnxedge.runtime.bundle.pack import pack_bundle
    from onnxedge.runtime.bundle.write import atomic_write_bytes

    result = pack_bundle(bundle, out, golden=not no_golden, force=force)
    for name, size in result.files.items():
        click.echo(f"{size:>12,}  {name}")
    left = f"; left out: {', '.join(result.left_out)}" if result.left_out else ""
    click.echo(f"packed {bundle} into {out}: {result.total_bytes:,} bytes{left}")
    if json_path is not None:
        atomic_write_bytes(json_path, (json.dumps(result.to_dict(), indent=2) + "\n").encode())
