"""CTranslate2 ``model.bin``: a pure-numpy reader and writer (the format, not the library).

    variables = read_model_bin("model.bin")     # {"encoder/conv1/weight": ndarray, ...}, aliases resolved
    write_model_bin("copy.bin", variables, aliases={"decoder/projection/weight": "decoder/embeddings/weight"})

Layout (little-endian; CTranslate2 v4 ``model_spec.py`` / ``model.cc``): u32 binary version; if
version >= 2 a string spec name and u32 spec revision; u32 variable count; per variable a string
name, u8 rank, u32 x rank shape, then (version >= 4) u8 dtype id and u32 byte count, or (legacy)
u8 item size and u32 element count, then the raw C-order bytes; if version >= 3 a u32 alias count
and (alias, target) string pairs. A string is a u16 length that counts a trailing NUL, then the bytes.

Quantised files (a variable with a ``<name>_scale`` sibling) are refused: the packaged Whisper
files are float16 and a silent de-quantisation would change the model.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import DataError

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
DTYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3, np.dtype(np.float16): 4}
LEGACY_ITEM = {4: np.float32, 2: np.int16, 1: np.int8}


@dataclass
class ModelBin:
    version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)


class _Cursor:
    def __init__(self, data: bytes, path: Path):
        self.data, self.at, self.path = data, 0, path

    def take(self, n: int, what: str) -> bytes:
        if self.at + n > len(self.data):
            raise DataError(f"{self.path}: truncated while reading {what} (needs {n} bytes at offset {self.at}, file has {len(self.data)}); reinstall the weights package")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        (n,) = self.unpack("H", what)
        raw = self.take(n, what)
        if n == 0 or raw[-1] != 0:
            raise DataError(f"{self.path}: corrupt string in {what} at offset {self.at - n}")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{self.path}: corrupt string in {what} ({err})") from err


def read_model_bin(path: str | os.PathLike) -> ModelBin:
    """Every variable as a numpy array in its stored dtype (bfloat16 widened to float32)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such CTranslate2 model file")
    cur = _Cursor(path.read_bytes(), path)
    (version,) = cur.unpack("I", "the binary version")
    if not 1 <= version <= 6:
        raise DataError(f"{path}: not a CTranslate2 model.bin (binary version {version}; expected 1..6)")
    spec_name, revision = "", 1
    if version >= 2:
        spec_name = cur.string("the spec name")
        (revision,) = cur.unpack("I", "the spec revision")
    (count,) = cur.unpack("I", "the variable count")
    variables: dict[str, np.ndarray] = {}
    for index in range(count):
        name = cur.string(f"the name of variable {index}")
        (rank,) = cur.unpack("B", f"the rank of {name}")
        shape = cur.unpack(f"{rank}I", f"the shape of {name}") if rank else ()
        if version >= 4:
            dtype_id, num_bytes = cur.unpack("BI", f"the dtype of {name}")
            if dtype_id not in DTYPES:
                raise DataError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
            dtype = DTYPES[dtype_id]
        else:
            item, elements = cur.unpack("BI", f"the dtype of {name}")
            if item not in LEGACY_ITEM:
                raise DataError(f"{path}: variable {name} has unknown item size {item}")
            dtype = LEGACY_ITEM[item]
            num_bytes = elements * item
        expected = int(np.prod(shape, dtype=np.int64)) * (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize)
        if num_bytes != expected:
            raise DataError(f"{path}: variable {name} declares {num_bytes} bytes for shape {shape}, expected {expected}")
        raw = cur.take(num_bytes, f"the data of {name}")
        if dtype == "bfloat16":
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        variables[name] = array.reshape(shape)
    aliases = {}
    if version >= 3:
        (n_alias,) = cur.unpack("I", "the alias count")
        for index in range(n_alias):
            alias = cur.string(f"alias {index}")
            target = cur.string(f"the target of alias {alias}")
            if target not in variables:
                raise DataError(f"{path}: alias {alias} points to a missing variable {target}")
            aliases[alias] = target
    if cur.at != len(cur.data):
        raise DataError(f"{path}: {len(cur.data) - cur.at} unexpected bytes after the last record (corrupt or not a CTranslate2 file)")
    quantised = sorted(n for n in variables if n.endswith("_scale"))
    if quantised:
        raise DataError(f"{path}: quantised model ({quantised[0]} ...); convert the model with --quantization float16 or float32")
    for alias, target in aliases.items():
        variables[alias] = variables[target]
    return ModelBin(version, spec_name, revision, variables, aliases)


def write_model_bin(path: str | os.PathLike, variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None,
                    spec_name: str = "WhisperSpec", spec_revision: int = 3, version: int = 6, bfloat16: frozenset[str] = frozenset()) -> None:
    """The inverse of ``read_model_bin`` (records sorted by name, as CTranslate2 writes them).
    ``version`` 2 or 3 writes the legacy item-size records (float32, int16, int8 only); variables
    named in ``bfloat16`` (float32 arrays) are stored as bfloat16, truncated."""
    from shared.io import atomic_path

    def string(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    aliases = aliases or {}
    out = [struct.pack("<I", version)]
    if version >= 2:
        out += [string(spec_name), struct.pack("<I", spec_revision)]
    names = sorted(n for n in variables if n not in aliases)
    out.append(struct.pack("<I", len(names)))
    for name in names:
        array = np.array(variables[name], order="C")  # (ascontiguousarray would turn a scalar into shape (1,))
        out += [string(name), struct.pack("<B", array.ndim), struct.pack(f"<{array.ndim}I", *array.shape)]
        if name in bfloat16:
            array = (array.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
            out.append(struct.pack("<BI", 5, array.nbytes))
        elif version >= 4:
            out.append(struct.pack("<BI", DTYPE_IDS[array.dtype], array.nbytes))
        else:
            out.append(struct.pack("<BI", array.dtype.itemsize, array.size))
        out.append(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    if version >= 3:
        out.append(struct.pack("<I", len(aliases)))
        out += [string(a) + string(t) for a, t in sorted(aliases.items())]
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(b"".join(out))

