"""QUEEN's bitstream: real bytes on disk, one file per frame, and a decoder that needs nothing else.

Integer symbols (latents, symbol deltas, the gate mask) are entropy coded with constriction's ANS
coder under a static categorical model built from each tensor's histogram, one model per latent
dimension (the histogram travels in the header). Float tensors (frame-1 attributes, gated position
offsets, decoder weights, unquantized residuals) are stored as raw float32. MB/frame in the table
is measured from these files; ``estimate_bits`` is the paper's accounting (empirical entropy plus
32 bits per float), which ignores headers.

Frame file layout (little endian):
    magic b"QUEENFRM" | version u16 | kind u8 (0 key, 1 residual) | stream id u64 | index u32
    | n_gaussians u32 | payload_len u64 | crc32 u32 | payload
The stream id is drawn at random when a stream starts (stream.py) and written into every frame of
it: a frame file copied in from another row or run is refused instead of decoding into garbage.
A residual frame with densification also holds ``children`` (new Gaussians per previous one) and
``removed`` (previous Gaussians that are gone): its Gaussians are the previous ones not removed, in
order, then the new ones grouped by parent, each new one starting from its parent's previous values.
payload: a sequence of sections  name_len u8 | name | type u8 (0 float32, 1 symbols) | ndim u8
    | shape u32 x ndim | data_len u32 | data
A short file, a bad checksum, a frame out of order or of another stream raises BitstreamError naming the frame.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from shared.errors import DataError
from shared.io import atomic_write_bytes

from .model import Gaussians

MAGIC = b"QUEENFRM"
VERSION = 2  # 2: the stream id
HEADER = struct.Struct("<8sHBQIIQI")
KEY, RESIDUAL = 0, 1


class BitstreamError(DataError):
    """A frame file is missing, truncated, corrupt or out of order."""


# ------------------------------------------------------------------ symbols --------------------


def _categorical(counts: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical((counts / counts.sum()).astype(np.float64), perfect=False)


def encode_symbols(symbols: np.ndarray) -> bytes:
    """Entropy-code one integer tensor's values (flattened): histogram header + ANS words."""
    import constriction

    flat = np.asarray(symbols, dtype=np.int64).reshape(-1)
    if flat.size == 0:
        return struct.pack("<iI", 0, 0)
    lo = int(flat.min())
    counts = np.bincount(flat - lo).astype(np.uint32)
    header = struct.pack("<iI", lo, len(counts)) + counts.tobytes()
    if np.count_nonzero(counts) == 1:
        return header  # a constant tensor costs only its header
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse((flat - lo).astype(np.int32), _categorical(counts.astype(np.float64)))
    return header + coder.get_compressed().astype("<u4").tobytes()


def decode_symbols(data: bytes, count: int) -> np.ndarray:
    import constriction

    lo, k = struct.unpack_from("<iI", data)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    counts = np.frombuffer(data, dtype="<u4", count=k, offset=8).astype(np.float64)
    if int(counts.sum()) != count:
        raise BitstreamError(f"symbol histogram holds {int(counts.sum())} symbols, expected {count}")
    if np.count_nonzero(counts) == 1:
        return np.full(count, lo + int(np.flatnonzero(counts)[0]), dtype=np.int64)
    words = np.frombuffer(data, dtype="<u4", offset=8 + 4 * k).astype(np.uint32)
    decoder = constriction.stream.stack.AnsCoder(words)
    return decoder.decode(_categorical(counts), count).astype(np.int64) + lo


def entropy_bits(symbols: torch.Tensor) -> float:
    """Empirical entropy of the values, sum of -count log2(count / n) (the paper's size estimate)."""
    flat = symbols.reshape(-1).to(torch.int64)
    if flat.numel() == 0:
        return 0.0
    counts = torch.unique(flat, return_counts=True)[1].double()
    return float(-(counts * torch.log2(counts / flat.numel())).sum())


# ------------------------------------------------------------------ frames ---------------------


def _flatten(payload: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in payload.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _unflatten(flat: dict[str, torch.Tensor]) -> dict:
    out: dict = {}
    for k, v in flat.items():
        node = out
        *parents, leaf = k.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _is_symbol_tensor(t: torch.Tensor) -> bool:
    return t.dtype in (torch.bool, torch.int32, torch.int64)


def encode_frame(index: int, kind: int, n_gaussians: int, payload: dict, stream_id: int = 0) -> bytes:
    body = io.BytesIO()
    for name, t in _flatten(payload).items():
        t = t.detach().cpu()
        if _is_symbol_tensor(t):
            kind_id = 1
            if t.dim() == 2:  # one model per latent dimension: each column has its own statistics
                data = b"".join(struct.pack("<I", len(c)) + c for c in (encode_symbols(t[:, j].numpy()) for j in range(t.shape[1])))
            else:
                data = encode_symbols(t.to(torch.int64).numpy())
        else:
            kind_id, data = 0, t.to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        encoded = name.encode()
        body.write(struct.pack("<B", len(encoded)) + encoded + struct.pack("<BB", kind_id, t.dim()))
        body.write(struct.pack(f"<{t.dim()}I", *t.shape) + struct.pack("<I", len(data)) + data)
    payload_bytes = body.getvalue()
    return HEADER.pack(MAGIC, VERSION, kind, stream_id, index, n_gaussians, len(payload_bytes), zlib.crc32(payload_bytes)) + payload_bytes


def stream_id_of(data: bytes) -> int | None:
    """The stream id in a frame's header (None for bytes too short to hold one)."""
    return HEADER.unpack_from(data)[3] if len(data) >= HEADER.size else None


def decode_frame(data: bytes, expected_index: int | None = None, source: str = "", expected_stream: int | None = None) -> tuple[int, int, int, dict]:
    """(index, kind, n_gaussians, payload) of one frame file's bytes; BitstreamError on any damage,
    and on a stream id other than ``expected_stream`` (when given)."""
    where = f"frame {expected_index}" if expected_index is not None else "frame"
    where += f" ({source})" if source else ""
    if len(data) < HEADER.size:
        raise BitstreamError(f"{where}: truncated, {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    magic, version, kind, stream, index, n, length, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BitstreamError(f"{where}: not a QUEEN frame (magic {magic!r})")
    if version != VERSION:
        raise BitstreamError(f"{where}: bitstream version {version}, this decoder reads {VERSION}")
    if expected_stream is not None and stream != expected_stream:
        raise BitstreamError(f"{where}: the file belongs to stream {stream:016x}, not to stream {expected_stream:016x} of the frames "
                             "before it (a frame file from another row or run?)")
    if expected_index is not None and index != expected_index:
        raise BitstreamError(f"{where}: the file holds frame {index}; frames must be decoded in order")
    body = data[HEADER.size:]
    if len(body) != length:
        raise BitstreamError(f"{where}: truncated, payload has {len(body)} of {length} bytes")
    if zlib.crc32(body) != crc:
        raise BitstreamError(f"{where}: checksum mismatch, the payload is corrupt")
    flat, pos = {}, 0
    while pos < len(body):
        (name_len,) = struct.unpack_from("<B", body, pos)
        name = body[pos + 1: pos + 1 + name_len].decode()
        pos += 1 + name_len
        kind_id, ndim = struct.unpack_from("<BB", body, pos)
        shape = struct.unpack_from(f"<{ndim}I", body, pos + 2)
        pos += 2 + 4 * ndim
        (size,) = struct.unpack_from("<I", body, pos)
        chunk = body[pos + 4: pos + 4 + size]
        pos += 4 + size
        count = math.prod(shape)
        if kind_id == 0:
            flat[name] = torch.from_numpy(np.frombuffer(chunk, dtype="<f4").copy()).reshape(shape)
        elif ndim == 2:
            cols, cpos = [], 0
            for _ in range(shape[1]):
                (clen,) = struct.unpack_from("<I", chunk, cpos)
                cols.append(decode_symbols(chunk[cpos + 4: cpos + 4 + clen], shape[0]))
                cpos += 4 + clen
            flat[name] = torch.from_numpy(np.stack(cols, 1) if cols else np.zeros(shape, np.int64)).to(torch.int32).reshape(shape)
        else:
            values = torch.from_numpy(decode_symbols(chunk, count)).reshape(shape)
            flat[name] = values.bool() if name.endswith(("gate_open", "removed")) else values.to(torch.int32)
    return index, kind, n, _unflatten(flat)


def frame_path(directory: Path, index: int) -> Path:
    return Path(directory) / f"frame_{index:05d}.qbin"


def write_frame(directory: Path, index: int, kind: int, n_gaussians: int, payload: dict, stream_id: int = 0) -> int:
    """Encode and write one frame atomically; returns its size in bytes."""
    data = encode_frame(index, kind, n_gaussians, payload, stream_id)
    Path(directory).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(frame_path(directory, index), data)
    return len(data)


# ------------------------------------------------------------------ payloads -------------------


def keyframe_payload(g: Gaussians, rest_symbols: torch.Tensor, rest_decoder: dict) -> dict:
    return {
        "xyz": g.xyz, "f_dc": g.f_dc, "log_scale": g.log_scale, "rot": g.rot, "opacity_logit": g.opacity_logit,
        "f_rest_symbols": rest_symbols, "decoders": {"f_rest": rest_decoder},
    }


def _decoder_matrix(params: dict, latent_dim: int, out_dim: int) -> torch.Tensor:
    if "weight" in params:
        return params["weight"]
    from .model import dct_basis

    return dct_basis(latent_dim, out_dim) * params["scale"]


def _decode(symbols: torch.Tensor, params: dict, out_dim: int) -> torch.Tensor:
    return symbols.to(torch.float32) @ _decoder_matrix(params, symbols.shape[1], out_dim) + params["bias"]


class StreamDecoder:
    """Rebuilds the scene frame by frame from the frame files alone (no trainer state)."""

    def __init__(self):
        self.state: Gaussians | None = None
        self.rest_symbols: torch.Tensor | None = None
        self.frames_decoded = 0
        self.stream_id: int | None = None  # taken from the first frame; every later frame must carry it

    def apply(self, data: bytes, source: str = "") -> Gaussians:
        index, kind, n, p = decode_frame(data, self.frames_decoded, source, self.stream_id)
        if self.stream_id is None:
            self.stream_id = stream_id_of(data)
        where = f"frame {index}" + (f" ({source})" if source else "")
        if kind == KEY:
            rest_width = p["decoders"]["f_rest"]["bias"].shape[0]
            f_rest = _decode(p["f_rest_symbols"], p["decoders"]["f_rest"], rest_width)
            self.state = Gaussians(p["xyz"], p["f_dc"], f_rest, p["log_scale"], p["rot"], p["opacity_logit"])
            self.rest_symbols = p["f_rest_symbols"]
        else:
            if self.state is None:
                raise BitstreamError(f"{where}: a residual frame needs the preceding frames; start from frame 0")
            if not p:  # the no-update row: the scene stays as it is
                if n != len(self.state):
                    raise BitstreamError(f"{where}: it describes {n} Gaussians but the decoded scene has {len(self.state)}")
                self.frames_decoded += 1
                return self.state
            prev, rest_symbols = self.state, self.rest_symbols
            if "children" in p:  # densification: the previous Gaussians that stay, then the new ones by parent
                if len(p["children"]) != len(prev) or len(p["removed"]) != len(prev):
                    raise BitstreamError(f"{where}: densification record for {len(p['children'])} Gaussians but the decoded scene has {len(prev)}")
                rows = torch.cat([torch.nonzero(~p["removed"])[:, 0], torch.repeat_interleave(torch.arange(len(prev)), p["children"].long())])
                prev = prev.index(rows)
                rest_symbols = rest_symbols[rows] if "f_rest_symbol_delta" in p else None  # float rows keep f_rest as floats
            if n != len(prev):
                raise BitstreamError(f"{where}: it describes {n} Gaussians but the decoded scene has {len(prev)}")
            open_ = p["gate_open"]
            if int(open_.sum()) != len(p["xyz_offset"]):
                raise BitstreamError(f"{where}: {int(open_.sum())} open gates but {len(p['xyz_offset'])} position offsets")
            offset = torch.zeros_like(prev.xyz)
            offset[open_] = p["xyz_offset"]
            xyz = prev.xyz + offset
            if "f_rest_symbol_delta" in p:  # quantized: integer latents, or float32 residuals for an unquantised attribute
                dec = p["decoders"]
                self.rest_symbols = rest_symbols + p["f_rest_symbol_delta"]

                def residual(k, width):
                    return _decode(p[f"{k}_symbols"], dec[k], width) if f"{k}_symbols" in p else p[f"{k}_delta"]

                self.state = Gaussians(
                    xyz, prev.f_dc + residual("f_dc", 3), _decode(self.rest_symbols, dec["f_rest"], prev.f_rest.shape[1]),
                    prev.log_scale + residual("log_scale", 3), prev.rot + residual("rot", 4), prev.opacity_logit + residual("opacity_logit", 1),
                )
            elif "f_dc_gated_delta" in p:  # float residuals of the open Gaussians only
                delta = {}
                for k in ("f_dc", "f_rest", "log_scale", "rot", "opacity_logit"):
                    delta[k] = torch.zeros_like(getattr(prev, k))
                    delta[k][open_] = p[f"{k}_gated_delta"]
                self.state = Gaussians(xyz, *(getattr(prev, k) + delta[k] for k in ("f_dc", "f_rest", "log_scale", "rot", "opacity_logit")))
            else:
                self.state = Gaussians(
                    xyz, prev.f_dc + p["f_dc_delta"], prev.f_rest + p["f_rest_delta"], prev.log_scale + p["log_scale_delta"],
                    prev.rot + p["rot_delta"], prev.opacity_logit + p["opacity_logit_delta"],
                )
        self.frames_decoded += 1
        return self.state


def decode_stream(directory: Path, n_frames: int | None = None):
    """Yield the Gaussians of every frame in ``directory``; errors name the frame that failed."""
    directory = Path(directory)
    files = sorted(directory.glob("frame_*.qbin"))
    if not files:
        raise BitstreamError(f"no frame files (frame_*.qbin) in {directory}")
    n_frames = len(files) if n_frames is None else n_frames
    decoder = StreamDecoder()
    for t in range(n_frames):
        path = frame_path(directory, t)
        if not path.is_file():
            raise BitstreamError(f"frame {t}: {path.name} is missing from {directory}")
        yield decoder.apply(path.read_bytes(), source=path.name)


# ------------------------------------------------------------------ size estimate --------------


def estimate_bits(payload: dict) -> float:
    """The paper's size accounting for one frame: empirical entropy of every integer tensor, per
    latent dimension; 32 bits per float (gated offsets count only the open gates, since only they
    are stored); the gate mask at its binary entropy."""
    bits = 0.0
    for t in _flatten(payload).values():
        if _is_symbol_tensor(t):
            columns = t.T if t.dim() == 2 else t[None]
            bits += sum(entropy_bits(c) for c in columns)
        else:
            bits += 32.0 * t.numel()
    return bits
