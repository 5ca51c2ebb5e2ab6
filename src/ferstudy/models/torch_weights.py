"""Read a PyTorch state dict saved in torch's legacy format (before 1.6), without torch.

A ``.pth`` file of that format is four pickles (magic number, protocol version, system
information, the state dict with its tensors as references to storages), the list of storage
keys, then each storage's raw bytes. A pickle can name any Python global and run it, so the
state dict is read with a restricted unpickler that knows only the names a state dict needs
(:data:`ALLOWED`) and maps each one to a function of its own; any other name is refused with
one line, before anything is called. Tensors come back as NumPy arrays.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ferstudy.core.errors import FerError

#: The magic number and protocol version that open a legacy torch file.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

#: Storage type -> NumPy dtype (little-endian, as the file's system information must say).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ByteStorage": np.dtype("u1"),
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: _Storage, offset: int, shape: tuple, stride: tuple, *_: Any
) -> _TensorRef:
    """torch._utils._rebuild_tensor_v2 as a record: the bytes come after the pickle."""
    if not isinstance(storage, _Storage):
        raise FerError("tensor without a storage")
    return _TensorRef(storage, int(offset), tuple(map(int, shape)), tuple(map(int, stride)))


#: (module, name) -> what the restricted unpickler gives for that global.
ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self.source = source
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise FerError(
                f"{self.source}: refused to load the global {module}.{name}: a state dict of "
                "tensors needs only " + ", ".join(f"{m}.{n}" for m, n in ALLOWED)
            ) from None

    def persistent_load(self, saved_id: Any) -> _Storage:
        if not (isinstance(saved_id, tuple) and saved_id[:1] == ("storage",)):
            raise FerError(f"{self.source}: unknown persistent id {str(saved_id)[:60]}")
        storage_type, key, _location, numel, _view = saved_id[1:6]
        if not isinstance(storage_type, _StorageType):
            raise FerError(f"{self.source}: storage of unknown type {storage_type!r}")
        storage = self.storages.setdefault(key, _Storage(key, storage_type.dtype, int(numel)))
        return storage


def _read_storage(file: BinaryIO, storage: _Storage, source: str) -> np.ndarray:
    header = file.read(8)
    if len(header) != 8:
        raise FerError(f"{source}: truncated before the data of storage {storage.key}")
    (numel,) = struct.unpack("<q", header)
    if numel != storage.numel:
        raise FerError(f"{source}: storage {storage.key} holds {numel} values, not {storage.numel}")
    data = file.read(numel * storage.dtype.itemsize)
    if len(data) != numel * storage.dtype.itemsize:
        raise FerError(f"{source}: truncated in the data of storage {storage.key}")
    return np.frombuffer(data, dtype=storage.dtype)


def _materialise(ref: _TensorRef, data: dict[str, np.ndarray]) -> np.ndarray:
    flat = data[ref.storage.key]
    item = flat.itemsize
    if ref.shape and ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride)) >= (
        flat.size
    ):
        raise FerError(f"tensor of shape {ref.shape} runs past its storage {ref.storage.key}")
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :],
        shape=ref.shape,
        strides=tuple(s * item for s in ref.stride),
        writeable=False,
    )
    return np.array(view, dtype=flat.dtype.newbyteorder("="))


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format torch state dict, by name, as NumPy arrays."""
    source = str(path)
    with open(path, "rb") as file:
        head = []
        for _ in range(3):
            try:
                head.append(_StateDictUnpickler(file, source).load())
            except (pickle.UnpicklingError, EOFError, ValueError) as err:
                raise FerError(f"{source}: not a legacy torch file ({err})") from None
        if head[:2] != [LEGACY_MAGIC, LEGACY_PROTOCOL]:
            raise FerError(f"{source}: not a legacy torch file (it opens with {head[:2]})")
        if not (isinstance(head[2], dict) and head[2].get("little_endian")):
            raise FerError(f"{source}: only little-endian files are read")
        unpickler = _StateDictUnpickler(file, source)
        state = unpickler.load()
        keys = _StateDictUnpickler(file, source).load()
        if not isinstance(state, dict) or sorted(keys) != sorted(unpickler.storages):
            raise FerError(f"{source}: not a state dict of tensors")
        data = {key: _read_storage(file, unpickler.storages[key], source) for key in keys}
    tensors = {}
    for name, value in state.items():
        if not isinstance(value, _TensorRef):
            raise FerError(f"{source}: entry {name} is not a tensor")
        tensors[name] = _materialise(value, data)
    return tensors
