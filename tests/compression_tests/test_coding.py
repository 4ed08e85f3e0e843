"""Lossless coding: Huffman streams, per-tensor methods and the checked container."""
import struct
import zlib

import numpy as np
import pytest

from compiler import compression as C
from compiler.compression import (CompressionError, decode_container, decode_tensor,
                                  encode_container, encode_tensor, huffman_decode,
                                  huffman_encode, read_container, write_container)

RNG = np.random.default_rng(0)


def _roundtrip_symbols(symbols, alphabet):
    blob = huffman_encode(symbols, alphabet)
    out, end = huffman_decode(blob + b"tail", 0, len(symbols))
    np.testing.assert_array_equal(out, symbols)
    assert end == len(blob)
    return blob


@pytest.mark.parametrize("case", ["uniform", "skewed", "geometric", "fibonacci", "all-distinct",
                                  "two", "single", "empty", "one", "chunked"])
def test_huffman_round_trip(case):
    if case == "uniform":
        s, a = RNG.integers(0, 256, 20000), 256
    elif case == "skewed":  # p ~ 2^-i: the deepest possible tree
        p = 2.0 ** -np.arange(1, 41)
        s, a = RNG.choice(40, 50000, p=p / p.sum()), 40
    elif case == "geometric":
        s = np.minimum(RNG.geometric(0.01, 30000) - 1, 4095)
        a = 4096
    elif case == "fibonacci":  # adversarial: Fibonacci counts force a length-limited code
        fib = [1, 1]
        while len(fib) < 30:
            fib.append(fib[-1] + fib[-2])
        s = np.repeat(np.arange(30), fib[:30])
        s = RNG.permutation(s)[:400000] if len(s) > 400000 else RNG.permutation(s)
        a = 30
    elif case == "all-distinct":
        s, a = RNG.permutation(65536), 65536
    elif case == "two":
        s, a = np.array([0, 1, 1, 1, 0, 1]), 2
    elif case == "single":
        s, a = np.full(1000, 7), 9
    elif case == "one":
        s, a = np.array([3]), 4
    elif case == "chunked":  # crosses the chunk boundary of the decoder
        s, a = RNG.integers(0, 3, 2 * C.CHUNK + 1), 3
    else:
        s, a = np.zeros(0, dtype=np.int64), 5
    blob = _roundtrip_symbols(s, a)
    if case == "empty":
        assert blob == b""
    if case == "single":
        assert len(blob) <= 4  # no bits per symbol
    if case == "fibonacci":
        freqs = np.bincount(s, minlength=a)
        assert C._huffman_lengths(freqs).max() <= C.MAX_CODE_LEN
    if case == "skewed":  # close to the entropy
        p = np.bincount(s, minlength=a) / len(s)
        h = -np.sum(p[p > 0] * np.log2(p[p > 0]))
        assert len(blob) * 8 <= len(s) * (h + 0.1) + 8 * 64


def test_huffman_rejects_out_of_range_and_bad_streams():
    with pytest.raises(CompressionError):
        huffman_encode(np.array([0, 5]), 5)
    blob = huffman_encode(RNG.integers(0, 10, 500), 10)
    with pytest.raises(CompressionError):
        huffman_decode(blob[:-3], 0, 500)  # truncated
    with pytest.raises(CompressionError):
        huffman_decode(blob, 0, 501)  # more symbols than the bits hold


def _tensors():
    w = np.zeros((64, 50), np.float32)
    book = RNG.standard_normal(16).astype(np.float32)
    mask = RNG.random(w.shape) < 0.05
    w[mask] = book[RNG.integers(0, 16, mask.sum())]
    big_gap = np.zeros(100000, np.float32)
    big_gap[[0, 99999]] = 1.5
    return {
        "random_f32": RNG.standard_normal((32, 16, 3, 3)).astype(np.float32),
        "shared_sparse": w,
        "big_gap": big_gap,
        "specials": np.array([-0.0, 0.0, np.nan, np.inf, -np.inf, 1e-45], np.float32),
        "int8_4bit": RNG.integers(-7, 8, (128, 64)).astype(np.int8),
        "int64_shape": np.array([1, -1], np.int64),
        "scalar": np.array(3.25, np.float64),
        "empty": np.zeros((0, 4), np.float32),
        "zeros": np.zeros((7, 9), np.float32),
        "single_value": np.full((5, 5), 0.125, np.float32),
        "bools": RNG.random(37) < 0.5,
        "f16": RNG.standard_normal(100).astype(np.float16),
        "uint16": RNG.integers(0, 65535, 300).astype(np.uint16),
        "bf16_codebook": _bf16_layer(),
        "int8_codebook": RNG.choice(np.array([-128, -77, -3, 0, 5, 90, 127], np.int8), 500),
        "f64_codebook": RNG.choice(RNG.standard_normal(8), 300),
        "f32_all_distinct_small": RNG.standard_normal(24).astype(np.float32),
    }


def _bf16_layer(n: int = 2000, k: int = 64) -> np.ndarray:
    """A shared layer: 64 bfloat16 centroids of both signs (and zeros) -- the codebooks the
    sorted, gap-coded layout is for."""
    book = (RNG.standard_normal(k) * 3).astype(np.float32)
    book = (book.view(np.uint32) & 0xFFFF0000).view(np.float32)
    w = book[RNG.integers(0, k, n)]
    w[RNG.random(n) < 0.3] = 0
    return w.reshape(40, -1)


@pytest.mark.parametrize("name", list(_tensors()))
def test_tensor_round_trip_is_bit_exact(name):
    array = _tensors()[name]
    method, payload = encode_tensor(array)
    out = decode_tensor(method, payload, array.dtype, array.shape)
    assert out.dtype == array.dtype and out.shape == array.shape
    assert out.tobytes() == array.tobytes()
    if name in ("shared_sparse", "zeros", "single_value", "big_gap"):
        assert C._METHODS[method] in ("dense", "sparse")
        assert len(payload) < array.nbytes / 10


def test_sorted_codebook_is_smaller_than_plain_and_version_1_still_decodes():
    w = _bf16_layer()
    patterns = C._uint_view(w)
    head, inverse = C._codebook_payload(patterns, w.dtype)
    k = np.unique(patterns).size
    assert len(head) < 2 * k * 0.6  # plain bfloat16 entries: 2 bytes each
    book, pos = C._decode_codebook(head, 0, w.dtype)
    assert pos == len(head) and book[inverse].tobytes() == patterns.tobytes()
    # version 1 (plain entries, no layout byte) -- what earlier containers hold
    v1_book, v1_index = np.unique(patterns, return_inverse=True)
    v1 = (C._varint(2 * k + 1) + (v1_book >> 16).astype("<u2").tobytes()
          + huffman_encode(v1_index, k))
    assert decode_tensor(2, v1, w.dtype, w.shape, version=1).tobytes() == w.tobytes()
    # a whole version-1 container (header version byte 1) decodes through the same path
    body = C._varint(1) + C._varint(1) + b"w" + bytes([C._DTYPES.index("float32")])
    body += C._varint(2) + C._varint(40) + C._varint(50) + bytes([2]) + C._varint(len(v1)) + v1
    blob = C.MAGIC + bytes([1, 0]) + struct.pack("<I", 14 + len(body)) + body
    blob += struct.pack("<I", zlib.crc32(blob) & 0xFFFFFFFF)
    assert decode_container(blob)["w"].tobytes() == w.tobytes()


def test_malformed_sorted_codebook_is_rejected():
    w = _bf16_layer()
    method, payload = encode_tensor(w)
    assert C._METHODS[method] == "dense"
    layout = len(C._varint(2 * np.unique(C._uint_view(w)).size + 1))
    bad = bytearray(payload)
    bad[layout] = 16  # gap-code order >= the 16-bit entries
    with pytest.raises(CompressionError, match="order"):
        decode_tensor(method, bytes(bad), w.dtype, w.shape)
    with pytest.raises(CompressionError):
        decode_tensor(method, payload[:layout + 4], w.dtype, w.shape)


def test_shared_sparse_layer_codes_below_the_fixed_width_format():
    w = np.zeros((400, 300), np.float32)
    book = RNG.standard_normal(16).astype(np.float32)
    mask = RNG.random(w.shape) < 0.05
    w[mask] = book[RNG.integers(0, 16, mask.sum())]
    _, payload = encode_tensor(w)
    nnz = np.count_nonzero(w)
    # Deep Compression's fixed-width format: 4-bit index + 8-bit gap per weight + codebook
    assert len(payload) < nnz * 12 / 8 + 16 * 4


def test_container_round_trip_and_stats(tmp_path):
    tensors = _tensors()
    stats = {}
    n = write_container(tmp_path / "w.bin", tensors, stats)
    assert n == (tmp_path / "w.bin").stat().st_size
    out = read_container(tmp_path / "w.bin")
    assert list(out) == list(tensors)
    for k, a in tensors.items():
        assert out[k].dtype == a.dtype and out[k].tobytes() == a.tobytes()
    assert set(stats) == set(tensors)
    assert sum(s["bytes"] for s in stats.values()) <= n
    assert decode_container(encode_container({})) == {}


def _blob():
    return encode_container(_tensors())


def test_corrupt_byte_is_a_checksum_error_naming_the_file(tmp_path):
    blob = bytearray(_blob())
    for pos in (20, len(blob) // 2, len(blob) - 6):
        bad = bytearray(blob)
        bad[pos] ^= 0x10
        path = tmp_path / "weights.bin"
        path.write_bytes(bytes(bad))
        with pytest.raises(CompressionError, match=r"weights\.bin.*checksum"):
            read_container(path)


@pytest.mark.parametrize("keep", [0, 3, 9, 13, 100, -1])
def test_truncated_container_is_detected(tmp_path, keep):
    blob = _blob()
    cut = blob[:keep] if keep >= 0 else blob[:-1]
    path = tmp_path / "w.bin"
    path.write_bytes(cut)
    with pytest.raises(CompressionError, match=r"w\.bin.*(truncated|bad magic)"):
        read_container(path)


def test_extra_bytes_bad_magic_and_future_version():
    blob = _blob()
    with pytest.raises(CompressionError, match="extra bytes"):
        decode_container(blob + b"\0")
    with pytest.raises(CompressionError, match="bad magic"):
        decode_container(b"ONNX" + blob[4:])
    future = bytearray(blob)
    future[4] = C.VERSION + 1
    with pytest.raises(CompressionError, match="newer"):
        decode_container(bytes(future), "m.bin")


def test_consistent_checksum_but_malformed_payload_never_decodes_silently_wrong():
    """Flip bytes and recompute the CRC (an adversary, not noise): decoding either raises
    CompressionError or returns tensors of the declared names, shapes and dtypes."""
    tensors = {"w": _tensors()["shared_sparse"], "b": _tensors()["int8_4bit"]}
    blob = encode_container(tensors)
    rng = np.random.default_rng(1)
    for _ in range(200):
        bad = bytearray(blob[:-4])
        pos = int(rng.integers(10, len(bad)))
        bad[pos] = int(rng.integers(0, 256))
        bad = bytes(bad) + struct.pack("<I", zlib.crc32(bytes(bad)) & 0xFFFFFFFF)
        try:
            out = decode_container(bad)
        except CompressionError:
            continue
        for k, v in out.items():
            assert isinstance(v, np.ndarray)


def test_missing_file(tmp_path):
    with pytest.raises(CompressionError, match="missing"):
        read_container(tmp_path / "nope.bin")
