"""``predict --ray --output FILE.parquet``: the rows of a run in one Parquet file, streamed in row
groups (memory stays bounded) and renamed into place at the end (a reader sees the old file or
the whole new one)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from onnxedge.runtime.bundle.write import atomic_file
from onnxedge.runtime.classifier.predictions import FileResult
from onnxedge.runtime.names import escape, is_utf8, name_bytes, text

ROWS_PER_GROUP = 8192


def schema(k_classes: bool) -> Any:
    """file (`names.escape`d where the name is not UTF-8, with its raw bytes in file_bytes, null
    for the others), error (null when classified), probability and label (null when not); a
    model with one output adds positive, a K-class model class_index and probabilities (one per
    class)."""
    import pyarrow as pa

    fields = [
        pa.field("file", pa.string(), nullable=False),
        pa.field("file_bytes", pa.binary()),
        pa.field("error", pa.string()),
        pa.field("probability", pa.float64()),
        pa.field("label", pa.string()),
    ]
    if k_classes:
        fields += [
            pa.field("class_index", pa.int64()),
            pa.field("probabilities", pa.list_(pa.float64())),
        ]
    else:
        fields.append(pa.field("positive", pa.bool_()))
    return pa.schema(fields)


def _row(result: FileResult, k_classes: bool) -> dict[str, Any]:
    p = result.prediction
    utf8 = is_utf8(result.file)
    row: dict[str, Any] = {
        "file": result.file if utf8 else escape(result.file),
        "file_bytes": None if utf8 else name_bytes(result.file),
        "error": None if result.error is None else text(result.error),
        "probability": None if p is None else p.probability,
        "label": None if p is None else p.label,
    }
    if k_classes:
        row["class_index"] = None if p is None else p.class_index
        row["probabilities"] = None if p is None else list(p.probabilities)
    else:
        row["positive"] = None if p is None else p.positive
    return row


def write_results(
    path: str | Path, results: Iterable[FileResult], *, classes: tuple[str, ...], k_classes: bool
) -> tuple[int, int]:
    """Write ``results`` to ``path`` (Parquet, zstd); (rows, failed rows). ``classes`` go into
    the file's metadata, in the order of ``probabilities``."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table_schema = schema(k_classes).with_metadata({"classes": json.dumps(list(classes))})
    total = failed = 0
    # written as the reports are (`atomic_file`): renamed into place, a link kept pointing, a
    # device or a pipe written in place
    with (
        atomic_file(path, "wb") as file,
        pq.ParquetWriter(file, table_schema, compression="zstd") as writer,
    ):
        rows: list[dict[str, Any]] = []
        for result in results:
            rows.append(_row(result, k_classes))
            total += 1
            failed += not result
            if len(rows) >= ROWS_PER_GROUP:
                writer.write_table(pa.Table.from_pylist(rows, schema=table_schema))
                rows = []
        if rows or total == 0:
            writer.write_table(pa.Table.from_pylist(rows, schema=table_schema))
    return total, failed


__all__ = ["schema", "write_results"]
