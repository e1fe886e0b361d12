"""The layerquantizer1 byte format: what the header says, and what a damaged chunk does.

Every damaged or foreign input must raise a ValueError (CorruptChunkError) naming what is
wrong: never a crash, a hang, a huge allocation or a silently wrong array.
"""

import dataclasses
import struct

import crc32c
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from layerquantizer import CorruptChunkError, LayerQuantizer, _format
from layerquantizer._format import MAGIC
from layerquantizer.chunk import encode

CODEC = LayerQuantizer(nbits=12)


def sample_chunk(with_exceptions=True):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((2, 5, 7)).astype(np.float32).cumsum(axis=2)
    if with_exceptions:
        data[0, 1, 2] = np.nan
        data[1, 4, 6] = np.inf
    return CODEC.encode(data)


def reseal(body: bytes) -> bytes:
    """Give a modified chunk a valid checksum again, as a crafted chunk would have."""
    return body + struct.pack("<I", crc32c.crc32c(body))


def patched(chunk: bytes, offset: int, fmt: str, value) -> bytes:
    body = bytearray(chunk[:-4])
    struct.pack_into(fmt, body, offset, value)
    return reseal(bytes(body))


def assert_every_truncation_and_bit_flip_refused(encoded: bytes) -> None:
    """Every prefix of ``encoded``, and ``encoded`` with any one bit flipped (every third
    bit), raise CorruptChunkError: the checksum or a length catches each."""
    for length in range(len(encoded)):
        with pytest.raises(CorruptChunkError):
            CODEC.decode(encoded[:length])
    for bit in range(0, len(encoded) * 8, 3):
        damaged = bytearray(encoded)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptChunkError):
            CODEC.decode(bytes(damaged))


def decode_damaged(encoded: bytes, damage, truncate: bool) -> None:
    """``encoded`` with bytes overwritten (``damage``: position, value pairs), cut short
    where ``truncate``, and resealed, as a crafted chunk would be: refused with
    CorruptChunkError or decoded to some float32 array, never a crash."""
    body = bytearray(encoded[:-4])
    for position, value in damage:
        body[position % len(body)] = value
    if truncate:
        body = body[: damage[0][0] % len(body)]
    try:
        out = CODEC.decode(reseal(bytes(body)))
    except CorruptChunkError:
        return
    assert out.dtype == np.float32


def test_header_layout():
    chunk = sample_chunk()
    magic, version, flags, dtype, nbits, coder, ndim, reserved, block_rows = struct.unpack_from(
        "<4sBBBBBBHI", chunk
    )
    assert (magic, version, dtype, nbits, coder, ndim, reserved) == (MAGIC, 1, 1, 12, 1, 3, 0)
    assert flags == 1  # exceptions present
    assert block_rows >= 1
    assert struct.unpack_from("<3Q", chunk, 16) == (2, 5, 7)
    offsets_steps = np.frombuffer(chunk, "<f8", 4, 16 + 24).reshape(2, 2)
    assert (offsets_steps[:, 1] > 0).all()
    assert struct.unpack("<I", chunk[-4:])[0] == crc32c.crc32c(chunk[:-4])


@pytest.mark.parametrize(
    ("chunk", "match"),
    [
        (b"", "shorter than any chunk"),
        (b"\x89LQZ", "shorter than any chunk"),
        (b"PK\x03\x04" + bytes(40), "not a layerquantizer1 chunk: magic"),
        (
            MAGIC + b"\x05" + bytes(40),
            "format version 5; this layerquantizer reads versions 1, 2, 3 and 4 \\(upgrade",
        ),
    ],
)
def test_foreign_bytes(chunk, match):
    with pytest.raises(CorruptChunkError, match=match):
        CODEC.decode(chunk)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "match"),
    [
        (5, "<B", 0x80, "unknown flags"),
        (6, "<B", 3, "unknown dtype code 3"),
        (7, "<B", 0, "nbits 0 out of range"),
        (7, "<B", 25, "nbits 25 out of range"),
        (8, "<B", 9, "unknown entropy coder 9"),
        (9, "<B", 33, "ndim 33 exceeds 32"),
        (10, "<H", 1, "reserved field"),
        (12, "<I", 0, "rows per block is 0"),
        (16, "<Q", 2**60, "extent over"),
        (16, "<Q", 3, "truncated chunk|residual section"),
        (24, "<Q", 6, "truncated chunk|residual section|exception"),
        (40, "<d", float("nan"), "non-finite offset"),
        (48, "<d", -1.0, "negative step"),
    ],
)
def test_crafted_headers_are_refused_by_field(offset, fmt, value, match):
    # The checksum is valid: the decoder must still check every field itself.
    with pytest.raises(CorruptChunkError, match=match):
        CODEC.decode(patched(sample_chunk(), offset, fmt, value))


def test_flag_without_exception_section():
    chunk = sample_chunk(with_exceptions=False)
    with pytest.raises(CorruptChunkError, match="exception"):
        CODEC.decode(patched(chunk, 5, "<B", 1))


def test_every_truncation_is_refused():
    chunk = sample_chunk()
    for length in range(len(chunk)):
        with pytest.raises(CorruptChunkError):
            CODEC.decode(chunk[:length])


def test_every_bit_flip_is_detected():
    chunk = sample_chunk()
    for bit in range(len(chunk) * 8):
        damaged = bytearray(chunk)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptChunkError):
            CODEC.decode(bytes(damaged))


def test_appended_bytes_are_refused():
    with pytest.raises(CorruptChunkError):
        CODEC.decode(sample_chunk() + b"\x00")


def body_layout(chunk):
    """Offsets of the residual section's two sizes, of its data and of what follows it,
    for a 3-D chunk of 2 layers."""
    nlayers = 2
    table_end = 16 + 3 * 8 + 16 * nlayers
    (residual_size,) = struct.unpack_from("<Q", chunk, table_end)
    return table_end, table_end + 16, table_end + 16 + residual_size


def test_crafted_sections_are_refused():
    chunk = sample_chunk()
    _, start, end = body_layout(chunk)
    body = chunk[:-4]
    # A residual section that is not zstd at all.
    junk = body[:start] + bytes(end - start) + body[end:]
    with pytest.raises(CorruptChunkError, match="residual section"):
        CODEC.decode(reseal(junk))
    # An exception count larger than the chunk.
    too_many = bytearray(body)
    struct.pack_into("<Q", too_many, end, 10**6)
    with pytest.raises(CorruptChunkError, match="exception count"):
        CODEC.decode(reseal(bytes(too_many)))
    # An exception count that does not match the bitmap.
    mismatch = bytearray(body)
    struct.pack_into("<Q", mismatch, end, 1)
    with pytest.raises(CorruptChunkError, match="exception"):
        CODEC.decode(reseal(bytes(mismatch)))


@pytest.mark.parametrize(
    ("decoded", "match"),
    [
        (b"\x00" + bytes(139), "frame ended early"),  # one byte short of mode + 2 planes
        (b"\x00" + bytes(140) + b"\x00", "holds more than expected"),
        (b"\x07" + bytes(140), "unknown mode 7"),
        (b"\x01" + bytes(70) + bytes([200, 0, 0, 0, 1, 0, 0, 0]) + bytes(62), "200 escapes"),
        (b"\x01" + bytes(70) + bytes([2, 0, 0, 0, 2, 0, 0, 0]) + bytes([80, 0, 9, 9]) +
         bytes(58), "gaps do not place 2 escapes"),
    ],
)  # fmt: skip
def test_crafted_residual_blocks_are_refused(decoded, match):
    # A valid zstd frame whose content is not what the header and the blocks say.
    import zstandard

    chunk = sample_chunk(with_exceptions=False)  # 2 x 5 x 7: one block of 70 2-byte codes
    sizes, start, end = body_layout(chunk)
    body = chunk[:-4]
    frame = zstandard.ZstdCompressor(level=1).compress(decoded)
    announced = 141  # the most the shape allows: mode byte and two full planes
    crafted = body[:sizes] + struct.pack("<QQ", len(frame), announced) + frame + body[end:]
    with pytest.raises(CorruptChunkError, match=match):
        CODEC.decode(reseal(crafted))


def test_residual_size_outside_what_the_shape_allows():
    chunk = sample_chunk(with_exceptions=False)
    sizes, _, _ = body_layout(chunk)
    for announced in (70, 142, 2**40):  # at least 1 + 70, at most 1 + 140 bytes
        with pytest.raises(CorruptChunkError, match="makes a residual section of 71 to 141"):
            CODEC.decode(patched(chunk, sizes + 8, "<Q", announced))


def test_huge_declared_shape_does_not_allocate():
    # A tiny chunk claiming 2**40 values must be refused before any allocation.
    chunk = sample_chunk(with_exceptions=False)
    crafted = patched(patched(chunk, 32, "<Q", 2**20), 24, "<Q", 2**20)
    with pytest.raises(CorruptChunkError):
        CODEC.decode(crafted)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_refused(data):
    with pytest.raises(CorruptChunkError):
        CODEC.decode(data)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    st.booleans(),
)
def test_random_damage_with_a_resealed_checksum(damage, truncate):
    # Damage that keeps the checksum valid reaches the field checks: the decoder must
    # refuse it or decode it to a float32 array of the declared shape, never crash.
    decode_damaged(sample_chunk(), damage, truncate)


# --- Version 2: the predictor table ------------------------------------------------------


def sample_chunk_v2(with_exceptions=True, predictor="interpolation"):
    from layerquantizer import chunk

    rng = np.random.default_rng(0)
    data = rng.standard_normal((2, 5, 7)).astype(np.float32).cumsum(axis=2)
    if with_exceptions:
        data[0, 1, 2] = np.nan
        data[1, 4, 6] = np.inf
    return chunk.encode(data, nbits=12, level=1, predictor=predictor)


def test_header_layout_v2():
    chunk = sample_chunk_v2()
    assert struct.unpack_from("<4sBB", chunk) == (MAGIC, 2, 1)
    table_end = 16 + 24 + 32
    # Both layers interpolated, transposed, their codes in coding order.
    assert chunk[table_end : table_end + 2] == b"\x03\x03"
    steps = np.frombuffer(chunk, "<f8", 4, 16 + 24).reshape(2, 2)[:, 1]
    assert (steps > 0).all()  # the fine step: a 256th of the quantization step


@pytest.mark.parametrize(
    ("offset", "value", "match"),
    [
        (16 + 24 + 32, 4, "unknown predictor 4 \\(upgrade layerquantizer"),
        (16 + 24 + 33, 255, "unknown predictor 255"),
        (4, 1, None),  # read as version 1: the table shifts every later field
    ],
)
def test_crafted_predictor_tables_are_refused(offset, value, match):
    with pytest.raises(CorruptChunkError, match=match):
        CODEC.decode(patched(sample_chunk_v2(), offset, "<B", value))


@pytest.mark.parametrize("other", [0, 1, 2])
def test_another_valid_predictor_reads_the_same_codes_otherwise(other):
    # A crafted switch between predictors is no corruption the decoder can see: other
    # values, within the chunk's shape, nothing read out of bounds.
    chunk = sample_chunk_v2(with_exceptions=False)
    switched = CODEC.decode(patched(chunk, 16 + 24 + 32, "<B", other))
    assert switched.shape == (2, 5, 7)


def test_version_1_chunk_read_as_version_2_is_refused():
    with pytest.raises(CorruptChunkError):
        CODEC.decode(patched(sample_chunk(), 4, "<B", 2))


@pytest.mark.parametrize("with_exceptions", [False, True])
def test_every_truncation_and_bit_flip_of_version_2_is_refused(with_exceptions):
    chunk = sample_chunk_v2(with_exceptions)
    for length in range(len(chunk)):
        with pytest.raises(CorruptChunkError):
            CODEC.decode(chunk[:length])
    for bit in range(len(chunk) * 8):
        damaged = bytearray(chunk)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptChunkError):
            CODEC.decode(bytes(damaged))


def sample_chunk_bit_planes(nbits=6, coder=1, with_exceptions=True):
    """A version 2 chunk whose residual section is blocks of bit planes (mode 2) at 12
    bits or fewer."""
    from layerquantizer import chunk

    x = np.linspace(0, 3, 40)
    data = (np.sin(x)[:, None] * np.cos(x)[None, :] * np.ones((2, 1, 1))).astype(np.float32)
    if with_exceptions:
        data[1, 3, 4] = np.nan
    return chunk.encode(
        data, nbits=nbits, level=1, coder=coder, predictor="interpolation", range_coding=False
    )


def residual_blocks(encoded: bytes) -> bytes:
    """The residual section of a chunk of sample_chunk_bit_planes, before coding."""
    parsed = _format.parse(memoryview(encoded))
    if parsed.header.coder == 0:
        return bytes(parsed.residuals)
    # The section is a streamed frame, without its size in the header.
    return zstandard.ZstdDecompressor().decompressobj().decompress(bytes(parsed.residuals))


@pytest.mark.parametrize("nbits", [1, 6, 8, 9, 12])
def test_bit_plane_blocks_are_written_and_read(nbits):
    encoded = sample_chunk_bit_planes(nbits)
    blocks = residual_blocks(encoded)
    assert blocks[0] == 2  # one block, of bit planes
    assert len(blocks) == 1 + nbits * ((2 * 40 * 40 + 7) // 8)
    decoded = CODEC.decode(encoded)
    assert np.isnan(decoded[1, 3, 4]) and np.isfinite(decoded).sum() == decoded.size - 1


@pytest.mark.parametrize(
    ("chunk", "match"),
    [
        # Mode 2 in a version 1 chunk or above 12 bits is no mode of these chunks.
        (
            lambda: encode(
                np.zeros((2, 3), np.float32), 12, 1, predictor="lorenzo", fallback=False
            ),
            "unknown mode 2",
        ),
        (lambda: sample_chunk_bit_planes(nbits=13, with_exceptions=False), "unknown mode 2"),
    ],
)
def test_bit_plane_mode_where_it_does_not_exist_is_refused(chunk, match):
    encoded = chunk()
    parsed = _format.parse(memoryview(encoded))
    blocks = bytearray(residual_blocks(encoded))
    blocks[0] = 2
    with pytest.raises(CorruptChunkError, match=match):
        CODEC.decode(rebuild_uncoded(parsed, bytes(blocks)))


def rebuild_uncoded(parsed, blocks):
    """The chunk again with ``blocks`` as its residual section, uncoded (coder 0)."""
    header = dataclasses.replace(parsed.header, coder=0)
    return _format.pack(header, [blocks], len(blocks), None)


def test_every_truncation_and_bit_flip_of_bit_planes_is_refused():
    chunk = sample_chunk_bit_planes(nbits=3)
    assert_every_truncation_and_bit_flip_refused(chunk)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    st.booleans(),
    st.sampled_from(["interpolation", "auto", "bit planes"]),
    st.booleans(),
)
def test_random_damage_of_version_2_with_a_resealed_checksum(
    damage, truncate, predictor, with_exceptions
):
    if predictor == "bit planes":
        encoded = sample_chunk_bit_planes(coder=int(with_exceptions))
    else:
        encoded = sample_chunk_v2(with_exceptions, predictor)
    decode_damaged(encoded, damage, truncate)
