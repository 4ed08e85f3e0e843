"""Lossless coding of weights: canonical Huffman, sparse relative indexing, a checked container.

Every constant tensor of a graph is coded exactly (bit for bit) with the smallest of:

``raw``      the little-endian bytes;
``deflate``  zlib of those bytes;
``dense``    a codebook of the tensor's distinct bit patterns + Huffman-coded indices of
             every element (what weight sharing / quantization leave behind);
``sparse``   Deep Compression's layout: positions of the non-zero elements as gaps between
             them, bounded to ``2**b - 1`` (a gap symbol ``2**b - 1`` is a filler that skips
             ``2**b - 1`` positions), Huffman-coded; the non-zero elements as Huffman-coded
             indices into a codebook of their distinct bit patterns.  ``b`` is chosen per
             tensor (1..12) for the smallest output.

Codebooks hold bit patterns (``-0.0``, NaN payloads and every integer survive); the coder
needs no annotation -- shared weights are simply tensors with few distinct values.  Since
version 2 a codebook is sorted by value and stored as its first entry plus Exp-Golomb-coded
gaps between neighbours (a 64-entry bfloat16 codebook: ~7 bits per entry instead of 16;
plain entries when that is smaller); small tensors of distinct values (a 24-channel bias)
are tried as codebooks too.

Container (``encode_container`` / ``decode_container``)::

    b"ECCW" | version u8 | flags u8 | total length u32 LE | count (varint)
    [flags bit 0: deflated block of the newline-joined names (varint length + bytes)]
    count x { [name, when not in the block] | dtype | shape | method u8 | payload length
              (varint) | payload }
    CRC-32 (u32 LE) of every byte before it

A truncated, extended or corrupted container, a version newer than ``VERSION`` and any
inconsistent payload raise `CompressionError` (naming the file when one was given); a
decoder never returns weights it could not verify.
"""
from __future__ import annotations

import heapq
import os
import struct
import zlib
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .fileio import atomic_write_bytes

__all__ = ["CompressionError", "VERSION", "MAGIC", "huffman_encode", "huffman_decode",
           "encode_tensor", "decode_tensor", "encode_container", "decode_container",
           "read_container", "write_container", "graph_tensors", "compress_graph",
           "load_weights_into", "sparse_bytes"]

MAGIC = b"ECCW"
VERSION = 2               # 2: value-sorted, gap-coded codebooks (1 is still read)
MAX_CODE_LEN = 20          # length-limited Huffman: table-driven decoding stays small
MAX_CODEBOOK = 1 << 16     # codebook methods are tried only up to this many distinct values
CHUNK = 1 << 18            # symbols per Huffman chunk (each chunk: bit count + bits)

_DTYPES = ["float32", "float64", "float16", "int8", "uint8", "int16", "uint16", "int32",
           "uint32", "int64", "uint64", "bool"]
_METHODS = ["raw", "deflate", "dense", "sparse"]


class CompressionError(ValueError):
    """A compressed stream or container that cannot be decoded exactly."""


# --- varints -------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    if n < 0:
        raise CompressionError(f"cannot encode negative length {n}")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift, value = 0, 0
    while True:
        if pos >= len(buf):
            raise CompressionError("stream ends inside a number (truncated)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CompressionError("malformed number in stream")


def _take(buf: bytes, pos: int, n: int, what: str) -> tuple[bytes, int]:
    if n < 0 or pos + n > len(buf):
        raise CompressionError(f"stream ends inside {what} (truncated)")
    return buf[pos:pos + n], pos + n


# --- canonical, length-limited Huffman -------------------------------------------------

def _huffman_lengths(freqs: np.ndarray, max_len: int = MAX_CODE_LEN) -> np.ndarray:
    """Code length per symbol (0 = unused); at most ``max_len`` bits."""
    freqs = np.asarray(freqs, dtype=np.int64)
    lengths = np.zeros(len(freqs), dtype=np.int64)
    used = np.flatnonzero(freqs)
    if len(used) <= 1:
        return lengths  # 0 or 1 symbol: no bits needed
    f = freqs[used].copy()
    while True:
        heap = [(int(w), i, (i,)) for i, w in enumerate(f)]
        heapq.heapify(heap)
        depth = np.zeros(len(f), dtype=np.int64)
        tie = len(f)
        while len(heap) > 1:
            w1, _, s1 = heapq.heappop(heap)
            w2, _, s2 = heapq.heappop(heap)
            merged = s1 + s2
            depth[list(merged)] += 1
            heapq.heappush(heap, (w1 + w2, tie, merged))
            tie += 1
        if depth.max() <= max_len:
            lengths[used] = depth
            return lengths
        f = np.maximum(1, f >> 1)  # flatten the distribution until the code fits


def _canonical(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes per symbol, symbols in canonical order) for canonical Huffman ``lengths``."""
    order = np.lexsort((np.arange(len(lengths)), lengths))
    order = order[lengths[order] > 0]
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, int(lengths[order[0]]) if len(order) else 0
    for i, sym in enumerate(order):
        ln = int(lengths[sym])
        if i:
            code = (code + 1) << (ln - prev)
        codes[sym] = code
        prev = ln
    return codes, order


def huffman_encode(symbols: np.ndarray, alphabet: int) -> bytes:
    """Self-describing Huffman stream of ``symbols`` (ints in ``[0, alphabet)``).

    The count of symbols is not stored (the caller knows it); an empty input gives ``b""``.
    """
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    if symbols.size == 0:
        return b""
    if symbols.min() < 0 or symbols.max() >= alphabet:
        raise CompressionError(f"symbol out of range [0, {alphabet})")
    freqs = np.bincount(symbols, minlength=alphabet)
    lengths = _huffman_lengths(freqs)
    max_len = int(lengths.max())
    head = _varint(alphabet) + bytes([max_len])
    if max_len == 0:  # a single distinct symbol: store it, no bits
        return head + _varint(int(symbols[0]))
    width = max_len.bit_length()
    head += _pack_bits(lengths, width)
    codes, _ = _canonical(lengths)
    out = [head]
    for start in range(0, symbols.size, CHUNK):  # chunks bound the decoder's memory
        part = symbols[start:start + CHUNK]
        ln = lengths[part]
        total = int(ln.sum())
        owner = np.repeat(np.arange(part.size), ln)
        starts = np.cumsum(ln) - ln
        within = np.arange(total) - starts[owner]
        bits = (codes[part][owner] >> (ln[owner] - 1 - within)) & 1
        out += [_varint(total), np.packbits(bits.astype(np.uint8)).tobytes()]
    return b"".join(out)


def huffman_decode(buf: bytes, pos: int, count: int) -> tuple[np.ndarray, int]:
    """Decode ``count`` symbols of a `huffman_encode` stream at ``buf[pos:]``;
    returns ``(symbols, position after the stream)``."""
    if count == 0:
        return np.zeros(0, dtype=np.int64), pos
    alphabet, pos = _read_varint(buf, pos)
    raw, pos = _take(buf, pos, 1, "a Huffman header")
    max_len = raw[0]
    if max_len > MAX_CODE_LEN:
        raise CompressionError(f"Huffman code length {max_len} > {MAX_CODE_LEN}")
    if max_len == 0:
        sym, pos = _read_varint(buf, pos)
        if sym >= alphabet:
            raise CompressionError("Huffman symbol out of range")
        return np.full(count, sym, dtype=np.int64), pos
    width = max_len.bit_length()
    nbytes = (alphabet * width + 7) // 8
    table, pos = _take(buf, pos, nbytes, "a Huffman table")
    lengths = _unpack_bits(table, width, alphabet)
    if lengths.max() != max_len or np.sum(2.0 ** -lengths[lengths > 0]) > 1.0:
        raise CompressionError("invalid Huffman table")
    _, order = _canonical(lengths)
    parts = []
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        nbits, pos = _read_varint(buf, pos)
        data, pos = _take(buf, pos, (nbits + 7) // 8, "Huffman data")
        parts.append(_decode_chunk(data, nbits, n, lengths, order, max_len))
    return np.concatenate(parts), pos


def _decode_chunk(data: bytes, nbits: int, count: int, lengths: np.ndarray,
                  order: np.ndarray, L: int) -> np.ndarray:
    if nbits < count:
        raise CompressionError("Huffman data shorter than its symbol count")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:nbits].astype(np.int64)
    bits = np.concatenate([bits, np.zeros(L, dtype=np.int64)])
    window = np.zeros(nbits, dtype=np.int64)
    for j in range(L):  # the L bits starting at every bit position, as an integer
        window = (window << 1) | bits[j:j + nbits]
    # canonical decoding: code length = first l with window < limit_l
    per_len = np.bincount(lengths[lengths > 0], minlength=L + 1)
    first = np.zeros(L + 2, dtype=np.int64)
    limits = np.zeros(L + 1, dtype=np.int64)
    offsets = np.zeros(L + 2, dtype=np.int64)
    code = 0
    for l in range(1, L + 1):
        first[l] = code
        offsets[l + 1] = offsets[l] + per_len[l]
        code = code + per_len[l]
        limits[l] = code << (L - l)
        code <<= 1
    ln = np.searchsorted(limits[1:], window, side="right") + 1
    valid = ln <= L
    ln = np.where(valid, ln, 1)
    rank = offsets[ln] + (window >> (L - ln)) - first[ln]
    rank = np.clip(rank, 0, len(order) - 1)
    # walk the chain 0 -> next(0) -> ... by pointer doubling (no per-symbol Python loop)
    nxt = np.append(np.minimum(np.arange(nbits) + ln, nbits), nbits)
    ok = np.append(valid, False)
    positions = np.zeros(count, dtype=np.int64)
    idx = np.arange(count)
    jump, k = nxt, 0
    while (1 << k) < count:
        sel = ((idx >> k) & 1).astype(bool)
        positions[sel] = jump[positions[sel]]
        jump = jump[jump]
        k += 1
    if positions[-1] >= nbits or not ok[positions].all() \
            or nxt[positions[-1]] != nbits:
        raise CompressionError("Huffman data does not decode to its symbol count")
    return order[rank[positions]].astype(np.int64)


def _pack_bits(values: np.ndarray, width: int) -> bytes:
    values = np.asarray(values, dtype=np.int64)
    bits = (values[:, None] >> np.arange(width - 1, -1, -1)) & 1
    return np.packbits(bits.ravel().astype(np.uint8)).tobytes()


def _unpack_bits(data: bytes, width: int, n: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:n * width].astype(np.int64)
    return (bits.reshape(n, width) << np.arange(width - 1, -1, -1)).sum(axis=1)


# --- one tensor ------------------------------------------------------------------------

def _uint_view(array: np.ndarray) -> np.ndarray:
    """The elements' bit patterns as unsigned integers (exact identity, -0.0 != 0.0)."""
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype == np.bool_:
        return flat.view(np.uint8)
    return flat.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[flat.dtype.itemsize])


def _order_keys(book: np.ndarray, kind: str, bits: int) -> np.ndarray:
    """Bit patterns -> integers in the numeric order of the values they encode (floats:
    sign-magnitude, signed ints: two's complement), so a sorted codebook has small gaps."""
    book = book.astype(np.uint64)
    sign, full = np.uint64(1 << (bits - 1)), np.uint64((1 << bits) - 1)
    if kind == "f":
        return np.where(book & sign, book ^ full, book ^ sign)
    return book ^ sign if kind == "i" else book


def _from_order_keys(keys: np.ndarray, kind: str, bits: int) -> np.ndarray:
    sign, full = np.uint64(1 << (bits - 1)), np.uint64((1 << bits) - 1)
    if kind == "f":
        return np.where(keys & sign, keys ^ sign, keys ^ full)
    return keys ^ sign if kind == "i" else keys


def _expgolomb(values: np.ndarray, order: int) -> str:
    """Exp-Golomb code of order ``order`` of non-negative integers, as a '0'/'1' string."""
    base = 1 << order
    return "".join("0" * (w.bit_length() - order - 1) + format(w, "b")
                   for w in (int(v) + base for v in values))


def _expgolomb_bits(values: np.ndarray, order: int) -> int:
    w = values.astype(np.float64) + float(1 << order)
    return int(np.sum(2 * (np.floor(np.log2(w)) + 1) - order - 1))


def _codebook_payload(patterns: np.ndarray, dtype: np.dtype) -> tuple[bytes, np.ndarray]:
    """The distinct patterns of ``patterns`` and every element's index into them.

    varint(2 K + half) | order u8 | entries.  ``half``: 4-byte float patterns whose low 16
    bits are all 0 (bfloat16 values) keep their high 16 bits.  The entries are sorted by
    value; ``order`` < 32: the first entry's bits, then the K - 1 gaps between neighbours
    minus one, Exp-Golomb coded (that order), in ``varint(bytes)`` + bytes -- a 64-entry
    bfloat16 codebook takes ~7 bits per entry instead of 16; ``order`` 255: the entries
    stored plainly (little-endian), when that is smaller or the patterns are 64-bit."""
    itemsize = max(dtype.itemsize, 1)
    book, inverse = np.unique(patterns, return_inverse=True)
    half = int(itemsize == 4 and not np.any(book & 0xFFFF))
    stored = (book >> 16).astype(np.uint16) if half else book
    bits = 16 if half else itemsize * 8
    keys = _order_keys(stored, dtype.kind, bits)
    order_sort = np.argsort(keys, kind="stable")
    keys, stored = keys[order_sort], stored[order_sort]
    inverse = np.argsort(order_sort)[inverse]  # indices into the value-sorted codebook
    plain = bytes([255]) + stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    body = plain
    if bits <= 32 and len(keys):
        gaps = np.diff(keys).astype(np.int64) - 1
        order = min(range(min(bits, 32)), key=lambda k: _expgolomb_bits(gaps, k))
        code = format(int(keys[0]), f"0{bits}b") + _expgolomb(gaps, order)
        packed = int(code + "0" * (-len(code) % 8), 2).to_bytes((len(code) + 7) // 8, "big")
        coded = bytes([order]) + _varint(len(packed)) + packed
        if len(coded) < len(plain):
            body = coded
    return _varint(2 * len(book) + half) + body, inverse.astype(np.int64)


def _encode_sparse(patterns: np.ndarray, dtype: np.dtype) -> bytes:
    nz = np.flatnonzero(patterns)
    head, inverse = _codebook_payload(patterns[nz], dtype)
    gaps = np.diff(np.concatenate([[-1], nz])) - 1 if nz.size else np.zeros(0, np.int64)
    best = None
    for b in range(1, 13):
        esc = (1 << b) - 1
        fill, rest = gaps // esc, gaps % esc
        # per non-zero: fill[i] filler symbols (esc), then its remaining gap rest[i]
        sym = np.full(int(fill.sum()) + len(gaps), esc, dtype=np.int64)
        sym[np.cumsum(fill + 1) - 1] = rest
        body = _varint(b) + _varint(sym.size) + huffman_encode(sym, esc + 1)
        if best is None or len(body) < len(best):
            best = body
        if gaps.size == 0 or gaps.max() < esc:
            break  # a larger bound removes no filler, it only widens the alphabet
    alphabet = int(inverse.max()) + 1 if inverse.size else 1
    return _varint(len(nz)) + head + best + huffman_encode(inverse, alphabet)


def encode_tensor(array: np.ndarray) -> tuple[int, bytes]:
    """``(method index, payload)``: the smallest exact coding of ``array``."""
    array = np.asarray(array)
    patterns = _uint_view(array)
    raw = patterns.astype(patterns.dtype.newbyteorder("<")).tobytes()
    options = [(0, raw), (1, zlib.compress(raw, 9))]
    if patterns.size:
        distinct = np.unique(patterns).size
        # a codebook pays when values repeat, or (sorted, gap-coded) for small tensors
        if distinct <= min(MAX_CODEBOOK, max(2, patterns.size // 2, min(patterns.size, 4096))):
            head, inverse = _codebook_payload(patterns, array.dtype)
            options.append((2, head + huffman_encode(inverse, int(inverse.max()) + 1)))
            if np.count_nonzero(patterns) < patterns.size:
                options.append((3, _encode_sparse(patterns, array.dtype)))
    return min(options, key=lambda o: (len(o[1]), o[0]))


def _decode_codebook(buf: bytes, pos: int, dtype: np.dtype,
                     version: int = VERSION) -> tuple[np.ndarray, int]:
    k, pos = _read_varint(buf, pos)
    k, half = k >> 1, k & 1
    if k > MAX_CODEBOOK:
        raise CompressionError(f"codebook of {k} entries exceeds {MAX_CODEBOOK}")
    width = max(dtype.itemsize, 1)
    utype = np.dtype(f"<u{width}")
    if half and width != 4:
        raise CompressionError("half-width codebook for a tensor that is not 32-bit")
    stored_type = np.dtype("<u2") if half else utype
    order = 255
    if version >= 2:
        code, pos = _take(buf, pos, 1, "a codebook layout")
        order = code[0]
    if order == 255:
        data, pos = _take(buf, pos, k * stored_type.itemsize, "a codebook")
        book = np.frombuffer(data, dtype=stored_type).astype(np.uint64)
    else:
        book, pos = _decode_sorted_codebook(buf, pos, k, order, 16 if half else width * 8,
                                            dtype.kind)
    book = (book << np.uint64(16)) if half else book
    return book.astype(utype.newbyteorder("=")), pos


def _decode_sorted_codebook(buf: bytes, pos: int, k: int, order: int, bits: int,
                            kind: str) -> tuple[np.ndarray, int]:
    if order >= min(bits, 32):
        raise CompressionError(f"codebook gap code of order {order} for {bits}-bit entries")
    n, pos = _read_varint(buf, pos)
    data, pos = _take(buf, pos, n, "a codebook")
    code = format(int.from_bytes(data, "big"), f"0{8 * n}b") if n else ""
    if k and len(code) < bits:
        raise CompressionError("codebook is truncated")
    keys, at, base = [], bits, 1 << order
    if k:
        keys.append(int(code[:bits], 2))
    try:
        for _ in range(k - 1):
            zeros = code.index("1", at) - at
            end = at + 2 * zeros + order + 1
            if end > len(code):
                raise ValueError
            keys.append(keys[-1] + int(code[at + zeros:end], 2) - base + 1)
            at = end
    except ValueError:
        raise CompressionError("codebook is truncated") from None
    if (len(code) - at >= 8 or "1" in code[at:] or (not k and n)
            or (keys and keys[-1] >> bits)):
        raise CompressionError("malformed codebook")
    return _from_order_keys(np.array(keys, dtype=np.uint64), kind, bits), pos


def decode_tensor(method: int, payload: bytes, dtype: np.dtype, shape: tuple[int, ...],
                  version: int = VERSION) -> np.ndarray:
    """The array ``encode_tensor`` coded (``version``: the container's, for its codebooks)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    utype = np.dtype(f"<u{dtype.itemsize}")
    if method in (0, 1):
        raw = payload if method == 0 else _inflate(payload)
        if len(raw) != n * dtype.itemsize:
            raise CompressionError(f"payload has {len(raw)} bytes, shape {shape} needs "
                                   f"{n * dtype.itemsize}")
        patterns = np.frombuffer(raw, dtype=utype)
    elif method == 2:
        book, pos = _decode_codebook(payload, 0, dtype, version)
        idx, pos = huffman_decode(payload, pos, n)
        _check_end(payload, pos)
        if n and (len(book) == 0 or idx.max() >= len(book)):
            raise CompressionError("codebook index out of range")
        patterns = book[idx] if n else np.zeros(0, utype)
    elif method == 3:
        nnz, pos = _read_varint(payload, 0)
        book, pos = _decode_codebook(payload, pos, dtype, version)
        b, pos = _read_varint(payload, pos)
        n_sym, pos = _read_varint(payload, pos)
        if not 1 <= b <= 12 or nnz > n or n_sym < nnz:
            raise CompressionError("malformed sparse header")
        esc = (1 << b) - 1
        sym, pos = huffman_decode(payload, pos, n_sym)
        idx, pos = huffman_decode(payload, pos, nnz)
        _check_end(payload, pos)
        advance = np.where(sym == esc, esc, sym + 1)
        where = (np.cumsum(advance) - 1)[sym != esc]
        if where.size != nnz or (nnz and (where[-1] >= n or idx.max() >= len(book))):
            raise CompressionError("sparse positions or indices out of range")
        patterns = np.zeros(n, dtype=utype)
        if nnz:
            patterns[where] = book[idx]
    else:
        raise CompressionError(f"unknown coding method {method}")
    out = np.ascontiguousarray(patterns.astype(utype.newbyteorder("="))).view(
        np.uint8 if dtype == np.bool_ else dtype)
    if dtype == np.bool_:
        out = out.view(np.bool_)
    return out.reshape(shape).copy()


def _inflate(payload: bytes) -> bytes:
    try:
        return zlib.decompress(payload)
    except zlib.error as exc:
        raise CompressionError(f"deflate payload is corrupt ({exc})") from None


def _check_end(payload: bytes, pos: int) -> None:
    if pos != len(payload):
        raise CompressionError(f"{len(payload) - pos} unexpected bytes after a tensor payload")


# --- container -------------------------------------------------------------------------

def encode_container(tensors: "Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]",
                     stats: dict | None = None) -> bytes:
    """All ``tensors`` (name -> array) in one checked container.  ``stats``, if given, is
    filled with name -> {"method", "bytes" (entry size), "raw_bytes"}."""
    items = list(tensors.items()) if isinstance(tensors, Mapping) else list(tensors)
    names = [name.encode("utf-8") for name, _ in items]
    if any(b"\n" in n for n in names):
        raise CompressionError("tensor names may not contain a newline")
    packed = zlib.compress(b"\n".join(names), 9)
    plain = sum(len(_varint(len(n))) + len(n) for n in names)
    flags = 1 if len(packed) + len(_varint(len(packed))) < plain else 0  # bit 0: names deflated
    body = bytearray(_varint(len(items)))
    if flags & 1:
        body += _varint(len(packed)) + packed
        share = (len(packed) + len(_varint(len(packed)))) / max(1, len(items))
    for (name, array), key in zip(items, names):
        array = np.asarray(array)
        if str(array.dtype) not in _DTYPES:
            raise CompressionError(f"tensor '{name}': dtype {array.dtype} cannot be coded")
        start = len(body)
        if not flags & 1:
            body += _varint(len(key)) + key
        body += bytes([_DTYPES.index(str(array.dtype))])
        body += _varint(array.ndim) + b"".join(_varint(int(d)) for d in array.shape)
        method, payload = encode_tensor(array)
        body += bytes([method]) + _varint(len(payload)) + payload
        if stats is not None:
            size = len(body) - start + (round(share) if flags & 1 else 0)
            stats[name] = {"method": _METHODS[method], "bytes": size,
                           "raw_bytes": int(array.nbytes)}
    head = MAGIC + bytes([VERSION, flags]) + struct.pack("<I", 4 + 2 + 4 + len(body) + 4)
    blob = head + bytes(body)
    return blob + struct.pack("<I", zlib.crc32(blob) & 0xFFFFFFFF)


def decode_container(blob: bytes, where: str = "<bytes>") -> dict[str, np.ndarray]:
    """name -> array, exactly as encoded; `CompressionError` naming ``where`` otherwise."""
    try:
        return _decode_container(bytes(blob), where)
    except CompressionError as exc:
        msg = str(exc)
        raise CompressionError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def _decode_container(blob: bytes, where: str) -> dict[str, np.ndarray]:
    if len(blob) < 14 or blob[:4] != MAGIC:
        if len(blob) < 14 and MAGIC.startswith(blob[:4]):
            raise CompressionError(f"{where}: truncated weights container ({len(blob)} bytes)")
        raise CompressionError(f"{where}: not a weights container (bad magic)")
    version = blob[4]
    if version > VERSION:
        raise CompressionError(f"{where}: container version {version} is newer than this "
                               f"compiler reads ({VERSION}); upgrade the compiler")
    total = struct.unpack("<I", blob[6:10])[0]
    if len(blob) < total:
        raise CompressionError(f"{where}: truncated weights container ({len(blob)} of "
                               f"{total} bytes)")
    if len(blob) > total:
        raise CompressionError(f"{where}: {len(blob) - total} extra bytes after the container")
    crc = struct.unpack("<I", blob[-4:])[0]
    if zlib.crc32(blob[:-4]) & 0xFFFFFFFF != crc:
        raise CompressionError(f"{where}: checksum mismatch (the file is corrupt)")
    flags = blob[5]
    if flags & ~1:
        raise CompressionError(f"{where}: unknown container flags {flags:#x}")
    body, pos = blob[10:-4], 0
    count, pos = _read_varint(body, pos)
    names: list[str] | None = None
    if flags & 1:
        n, pos = _read_varint(body, pos)
        packed, pos = _take(body, pos, n, "the name block")
        names = _inflate(packed).decode("utf-8").split("\n")
        if len(names) != count:
            raise CompressionError(f"name block lists {len(names)} names for {count} tensors")
    out: dict[str, np.ndarray] = {}
    for i in range(count):
        if names is None:
            n, pos = _read_varint(body, pos)
            key, pos = _take(body, pos, n, "a tensor name")
            name = key.decode("utf-8", errors="strict")
        else:
            name = names[i]
        if name in out:
            raise CompressionError(f"tensor '{name}' appears twice")
        code, pos = _take(body, pos, 1, "a dtype")
        if code[0] >= len(_DTYPES):
            raise CompressionError(f"tensor '{name}': unknown dtype code {code[0]}")
        ndim, pos = _read_varint(body, pos)
        shape = []
        for _ in range(ndim):
            d, pos = _read_varint(body, pos)
            shape.append(d)
        method, pos = _take(body, pos, 1, "a method")
        size, pos = _read_varint(body, pos)
        payload, pos = _take(body, pos, size, f"tensor '{name}'")
        try:
            out[name] = decode_tensor(method[0], payload, np.dtype(_DTYPES[code[0]]),
                                      tuple(shape), version)
        except CompressionError as exc:
            raise CompressionError(f"tensor '{name}': {exc}") from None
    if pos != len(body):
        raise CompressionError(f"{len(body) - pos} unexpected bytes after the last tensor")
    return out


def write_container(path: "str | os.PathLike", tensors, stats: dict | None = None) -> int:
    """Encode and write atomically; returns the number of bytes written."""
    blob = encode_container(tensors, stats)
    atomic_write_bytes(path, blob)
    return len(blob)


def read_container(path: "str | os.PathLike") -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise CompressionError(f"{path}: weights container is missing")
    return decode_container(path.read_bytes(), str(path))


# --- graphs ----------------------------------------------------------------------------

def graph_tensors(graph) -> list[tuple[str, np.ndarray]]:
    """Every constant the graph reads (weights, biases, shape operands), in graph order."""
    return [(v.name, v.const) for v in graph.constants if v.uses or v.is_graph_output]


def compress_graph(graph, stats: dict | None = None) -> bytes:
    """The container of all of ``graph``'s constants."""
    return encode_container(graph_tensors(graph), stats)


def load_weights_into(graph, tensors: Mapping[str, np.ndarray], where: str = "<container>") -> None:
    """Set every constant of ``graph`` from ``tensors``; names, shapes and dtypes must match."""
    consts = {name: v for name, v in ((v.name, v) for v in graph.constants)
              if v.uses or v.is_graph_output}
    missing = sorted(set(consts) - set(tensors))
    extra = sorted(set(tensors) - set(consts))
    if missing or extra:
        raise CompressionError(f"{where}: weights do not match the graph (missing "
                               f"{missing[:5]}, unexpected {extra[:5]})")
    for name, value in consts.items():
        array = tensors[name]
        if value.shape is not None and (tuple(array.shape) != tuple(value.shape)
                                        or array.dtype != value.dtype):
            raise CompressionError(f"{where}: tensor '{name}' is {array.dtype}{list(array.shape)}, "
                                   f"the graph expects {value.dtype}{list(value.shape)}")
        value.const = array


def sparse_bytes(array: np.ndarray, index_bits: int = 8, value_bits: int | None = None) -> int:
    """Fixed-width sparse size (the uncoded stages of the report): every stored element
    (non-zeros plus fillers for gaps over ``2**index_bits - 1``) costs ``index_bits`` for its
    relative position and ``value_bits`` (default: the dtype's width, or ceil(log2 K) for
    K distinct non-zero values when that is smaller, plus the K-entry codebook)."""
    patterns = _uint_view(np.asarray(array))
    nz = np.flatnonzero(patterns)
    esc = (1 << index_bits) - 1
    gaps = np.diff(np.concatenate([[-1], nz])) - 1 if nz.size else np.zeros(0, np.int64)
    entries = int(len(nz) + (gaps // esc).sum())
    width = np.asarray(array).dtype.itemsize * 8
    book = 0
    if value_bits is None:
        k = np.unique(patterns[nz]).size
        shared = max(1, int(np.ceil(np.log2(max(k, 2)))))
        if shared < width and k * width // 8 + (entries * shared + 7) // 8 < \
                (entries * width + 7) // 8:
            value_bits, book = shared, k * width // 8
        else:
            value_bits = width
    dense_bits = patterns.size * width
    sparse_bits = entries * (index_bits + value_bits) + book * 8
    return (min(dense_bits, sparse_bits) + 7) // 8
