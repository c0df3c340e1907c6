"""What `Bundle.open` verifies before anything runs; `onnxedge.runtime.bundle.reader` calls these.

1. Names: every path the manifest lists is relative, with no ``..``, ``.`` or empty part and no
   backslash (`onnxedge.runtime.bundle.manifest.check_file_names`, from the manifest's text
   alone).
2. Confinement: each one resolves inside the bundle directory, symlinks followed, before it is
   opened or hashed (`confined`); it must be a regular file (a named pipe would block).
3. Hashes: a file's sha256 matches the manifest (`verify_sha256`), computed over the bytes that
   are then used (`read_member`), so no swap can fall between the check and the use.
4. The model (`verify_model`): read without its external data; every tensor stored externally
   lies inside the bundle and is listed and verified (`external_data_files`); the graph's one
   input and one output agree with the manifest's (`check_io`).

One generation: a writer never changes a bundle directory it has published; it builds a new
one and renames it into place (`onnxedge.runtime.bundle_write`). A reader pins the directory it
opened (`Generation`) and reads every file through it, so the manifest and the files it reads
are of one generation; a file that vanished because a writer replaced the bundle meanwhile is
`Replaced`, and `Bundle.open` starts again on the new one.

A file outside the bundle is never opened, so no message can carry its contents or its hash; it
is named by path only.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any, Protocol

from onnxedge.runtime.bundle.hashing import sha256_bytes, sha256_file
from onnxedge.runtime.bundle.manifest import TensorSpec
from onnxedge.runtime.errors import BundleError, not_onnx

if TYPE_CHECKING:
    import onnx


class OpenedBundle(Protocol):
    """What `verify_model`, `inline_external_data` and `external_data_files` read of a bundle
    being opened (the reader's `Bundle` is one): its folder, manifest, model path and tensor
    specs, and ways to verify, or read the verified bytes of, one file the manifest lists."""

    path: Path
    manifest: Mapping[str, Any]
    model_path: Path
    input: TensorSpec
    output: TensorSpec

    def verify(self, name: str) -> Path: ...

    def read_bytes(self, name: str) -> bytes: ...


def confined(root: Path, name: str, *, what: str = "the manifest names") -> Path:
    """2.: ``root / name`` with symlinks resolved, if it stays inside ``root``; else an error that
    names both paths (and nothing of what lies outside)."""
    real_root = root.resolve()
    target = (real_root / name).resolve()
    if target == real_root or not target.is_relative_to(real_root):
        raise BundleError(
            f"{root / name}: {what} {name!r}, which resolves to {target}, outside the bundle "
            f"{real_root}; refusing to read it"
        )
    return target


def regular_file(
    path: Path, display: Path, *, why: str = "the manifest lists it"
) -> os.stat_result:
    """The stat of a regular file at ``path``; anything else is a `BundleError`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BundleError(f"{display} is missing ({why})") from None
    except OSError as e:
        raise BundleError(f"cannot read {display}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise BundleError(f"{display}: expected a file ({why}), found {kind}")
    return st


class Replaced(BundleError):
    """The bundle directory a reader pinned is no longer the one at its path: another run
    replaced it."""


@dataclasses.dataclass(frozen=True)
class Generation:
    """The bundle directory a reader opened, by identity (device, inode and change time): the one
    its manifest came from. The change time tells a new directory that reuses a freed inode
    number (a fast run of rewrites) from the one pinned; renaming a directory into place sets it,
    and nothing writes into a bundle once it is there."""

    path: Path
    dev: int
    ino: int
    ctime_ns: int = 0

    def same(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino, st.st_ctime_ns) == (self.dev, self.ino, self.ctime_ns)

    @classmethod
    def pin(cls, path: Path) -> Generation:
        fd = _open_dir(path)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return cls(path, st.st_dev, st.st_ino, st.st_ctime_ns)

    def replaced(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return not self.same(st)

    def read(
        self,
        name: str,
        display: Path,
        *,
        limit: int | None = None,
        why: str = "the manifest lists it",
        what: str = "a file",
    ) -> bytes:
        """The bytes of ``name`` (confined already) in this generation of the bundle: a regular
        file, at most ``limit`` bytes; ``why`` it must be there, for the messages. `Replaced`
        where the bundle at the path is another one (the file may be gone with the old one)."""
        fd = _open_dir(self.path)
        try:
            st = os.fstat(fd)
            if not self.same(st):
                raise Replaced(_replaced_message(self.path))
            try:
                member = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if self.replaced():
                    raise Replaced(_replaced_message(self.path)) from None
                raise BundleError(f"{display} is missing ({why})") from None
            except OSError as e:
                raise BundleError(f"cannot read {display}: {e.strerror or e}") from None
        finally:
            os.close(fd)
        try:
            st = os.fstat(member)
            if not stat.S_ISREG(st.st_mode):
                kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
                raise BundleError(f"{display}: expected a file ({why}), found {kind}")
            if limit is not None and st.st_size > limit:
                raise BundleError(
                    f"{display}: expected {what} of at most {limit:,} bytes, found {st.st_size:,}"
                )
            with os.fdopen(os.dup(member), "rb") as f:
                return f.read()
        except OSError as e:
            raise BundleError(f"cannot read {display}: {e.strerror or e}") from None
        except MemoryError:
            raise BundleError(
                f"cannot read {display}: out of memory for its {st.st_size:,} bytes"
            ) from None
        finally:
            os.close(member)


def _open_dir(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Replaced(_replaced_message(path)) from None
    except OSError as e:
        raise BundleError(f"cannot read the bundle {path}: {e.strerror or e}") from None


def _replaced_message(path: Path) -> str:
    return f"{path} was replaced by another onnxedge run while this one read it; run again"


def check_sha256(data: bytes, expected: str, display: Path) -> bytes:
    """3.: ``data``, if its sha256 is the manifest's."""
    actual = sha256_bytes(data)
    if actual != expected:
        raise BundleError(
            f"{display} does not match the manifest: expected sha256 {expected[:16]}…, "
            f"found {actual[:16]}…"
        )
    return data


def verify_sha256(path: Path, expected: str, display: Path) -> None:
    """3.: the sha256 of a confined regular file against the manifest's."""
    regular_file(path, display)
    try:
        actual = sha256_file(path)
    except OSError as e:
        raise BundleError(f"cannot read {display}: {e.strerror or e}") from None
    if actual != expected:
        raise BundleError(
            f"{display} does not match the manifest: expected sha256 {expected[:16]}…, "
            f"found {actual[:16]}…"
        )


def verify_model(bundle: OpenedBundle, data: bytes) -> tuple[str, ...]:
    """4.: ``model.onnx``'s verified bytes ``data`` parsed without its external data; returns
    the external-data files it uses, each verified."""
    model = parse_model(data, bundle.model_path)
    files = external_data_files(bundle, model)
    check_io(model, bundle.input, bundle.output, source=bundle.model_path)
    return files


def read_model(path: Path) -> onnx.ModelProto:
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, and whatever else a garbage file raises
        raise BundleError(not_onnx(path, e)) from None


def parse_model(data: bytes, display: Path) -> onnx.ModelProto:
    """An ONNX model from bytes already verified, its external data not loaded."""
    import onnx

    try:
        return onnx.load_model_from_string(data)
    except Exception as e:  # protobuf's DecodeError, and whatever else garbage raises
        raise BundleError(not_onnx(display, e)) from None


# protobuf serialises at most 2 GiB; a model whose external data would pass that stays a file.
_PROTOBUF_LIMIT = (2 << 30) - (1 << 20)


def inline_external_data(bundle: OpenedBundle, model: onnx.ModelProto) -> bytes:
    """``model`` serialised with every externally stored tensor's data taken from the verified
    bytes of its file (`Bundle.read_bytes`), so the engine opens no file after the check."""
    import onnx

    files: dict[str, bytes] = {}
    root = bundle.path.resolve()
    external = [t for t in model_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    if not external:
        return model.SerializeToString()
    total = model.ByteSize()
    for tensor in external:
        info = {e.key: e.value for e in tensor.external_data}
        name = (root / info["location"]).resolve().relative_to(root).as_posix()
        if name not in files:
            files[name] = bundle.read_bytes(name)
        data = files[name]
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else len(data) - offset
        if offset < 0 or length < 0 or offset + length > len(data):
            raise BundleError(
                f"{bundle.model_path}: tensor {tensor.name!r}: expected {length:,} bytes at "
                f"offset {offset:,} of {name}, which holds {len(data):,}"
            )
        total += length
        if total > _PROTOBUF_LIMIT:
            raise BundleError(
                f"{bundle.model_path}: the model with its external data passes protobuf's 2 GiB, "
                "so it cannot be handed to the engine as verified bytes"
            )
        tensor.raw_data = data[offset : offset + length]
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    return model.SerializeToString()


def external_data_files(bundle: OpenedBundle, model: onnx.ModelProto) -> tuple[str, ...]:
    """Every tensor stored as external data (initializers, sparse ones, tensor attributes, in
    subgraphs and functions too) lies inside the bundle, listed and verified: the names used."""
    import onnx

    root = bundle.path.resolve()
    verified: list[str] = []
    for tensor in model_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        where = f"{bundle.model_path}: tensor {tensor.name!r} stores its data externally"
        if not location:
            raise BundleError(f"{where}, but names no location")
        if os.path.isabs(location) or PureWindowsPath(location).is_absolute():
            raise BundleError(
                f"{where} at the absolute path {location!r}; expected a file inside the bundle"
            )
        if location.startswith("\\") or "\0" in location:
            raise BundleError(f"{where} at {location!r}; expected a file inside the bundle")
        target = (root / location).resolve()
        if target == root or not target.is_relative_to(root):
            raise BundleError(
                f"{where} at {location!r}, which resolves to {target}, outside the bundle "
                f"{root}; refusing to read it"
            )
        name = target.relative_to(root).as_posix()
        if name in verified:
            continue
        if name not in bundle.manifest["files"]:
            raise BundleError(
                f"{where} in {name!r}, which the manifest does not list, so its sha256 "
                "cannot be verified"
            )
        bundle.verify(name)
        verified.append(name)
    return tuple(verified)


def check_io(
    model: onnx.ModelProto, input: TensorSpec, output: TensorSpec, *, source: Path
) -> None:
    """The graph's inputs (initializers aside) are exactly the manifest's one input, its outputs
    exactly its one output, each with the stated element type, rank and static dims. A dim the
    manifest names (symbolic) must not be static in the model."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    for what, spec, values in (
        ("input", input, [v for v in graph.input if v.name not in initializers]),
        ("output", output, list(graph.output)),
    ):
        names = [v.name for v in values]
        if names != [spec.name]:
            raise BundleError(
                f"{source}: the manifest's {what} {spec.name!r} does not match the model's "
                f"{what}s: {', '.join(map(repr, names)) or 'none'}"
            )
        found = _describe_value(values[0])  # rank, static dims and element type, as the spec's
        if found != spec.describe():
            raise BundleError(
                f"{source}: {what} {spec.name!r}: the manifest says {spec.describe()}, the model "
                f"has {found}"
            )


def _describe_value(value: onnx.ValueInfoProto) -> str:
    """Like `TensorSpec.describe`: ``float32 array of shape [N, 3, 64, 64]``, ``?`` for a dim
    with neither a value nor a name, ``unknown shape`` when the model states none."""
    import onnx

    if not value.type.HasField("tensor_type"):
        return f"a {value.type.WhichOneof('value') or 'value of no type'}, not a tensor"
    tensor = value.type.tensor_type
    try:
        dtype = str(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    except Exception:
        dtype = f"element type {tensor.elem_type}"
    if not tensor.HasField("shape"):
        return f"{dtype} array of unknown shape"
    dims = ", ".join(str(d.dim_value) if d.HasField("dim_value") else "N" for d in tensor.shape.dim)
    return f"{dtype} array of shape [{dims}]"


def model_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Any) -> Iterator[onnx.TensorProto]:
    import onnx

    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _graph_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graph_tensors(sub)
