"""Format version 3: range-coded blocks (mode 3) and the stored chunk.

The kernels against the reference model, what the encoder writes, and what damaged or
crafted version 3 chunks do (always a CorruptChunkError naming the problem, never a
crash). Versions 1 and 2 are in tests/test_format.py.
"""

import dataclasses
import struct

import numpy as np
import pytest
import reference
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_codec import assert_within_bound
from test_format import (
    assert_every_truncation_and_bit_flip_refused,
    decode_damaged,
    patched,
    reseal,
)

from layerquantizer import CorruptChunkError, LayerQuantizer, _format, _range_kernels, chunk

CODEC = LayerQuantizer(nbits=12)


def planes_of(codes: np.ndarray, nbits: int) -> np.ndarray:
    nbytes = (nbits + 7) // 8
    codes = np.asarray(codes, np.int64)
    return np.stack([(codes >> (8 * k)) & 0xFF for k in range(nbytes)]).astype(np.uint8)


@settings(max_examples=200, deadline=None)
@given(
    nbits=st.integers(1, 24),
    share=st.floats(0.05, 0.95),
    size=st.integers(0, 400),
    seed=st.integers(0, 2**32 - 1),
)
def test_range_coder_matches_reference(nbits, share, size, seed):
    # Codes mostly small (what predictors leave), some of every size up to nbits bits.
    rng = np.random.default_rng(seed)
    codes = np.minimum(rng.geometric(share, size) - 1, (1 << nbits) - 1)
    wide = rng.random(size) < 0.05
    codes[wide] = rng.integers(0, 1 << nbits, int(wide.sum()))
    want = reference.range_encode(codes, nbits)
    out = np.empty(len(want) + 16, np.uint8)
    written = _range_kernels.range_encode(planes_of(codes, nbits), nbits, out)
    assert bytes(out[:written]) == want
    decoded = np.zeros(((nbits + 7) // 8, size), np.uint8)
    assert _range_kernels.range_decode(out[:written], nbits, decoded) == written
    assert (decoded == planes_of(codes, nbits)).all()
    want_codes, want_used = reference.range_decode(want, nbits, size)
    assert want_used == written and (want_codes == codes).all()
    # Too small an output: the encoder gives up (the block is stored in another mode).
    if written > 0:
        assert _range_kernels.range_encode(planes_of(codes, nbits), nbits, out[: written - 1]) < 0


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64), nbits=st.integers(1, 24), size=st.integers(0, 300))
def test_range_decoder_reads_any_bytes_into_nbits_codes(data, nbits, size):
    planes = np.zeros(((nbits + 7) // 8, size), np.uint8)
    used = _range_kernels.range_decode(np.frombuffer(data, np.uint8), nbits, planes)
    codes, want_used = reference.range_decode(data, nbits, size)
    assert used == want_used >= _range_kernels.MIN_BYTES
    assert (planes == planes_of(codes, nbits)).all()
    assert (codes < (1 << nbits)).all()


def blocks_of(encoded: bytes) -> tuple[_format.Header, bytes]:
    parsed = _format.parse(memoryview(encoded))
    blocks = bytes(parsed.residuals)
    if parsed.header.coder:
        blocks = zstandard.ZstdDecompressor().decompressobj().decompress(blocks)
    return parsed, blocks


def smooth(nbits=6, coder=1, with_exceptions=True, predictor="interpolation"):
    """A version 3 chunk of one block of mode 3."""
    x = np.linspace(0, 3, 40)
    data = np.sin(x)[:, None] * np.cos(x)[None, :] * np.ones((2, 1, 1))
    # A little noise: on the bare product zstd codes bit planes smaller, keeping mode 2.
    noise = np.random.default_rng(0).standard_normal(data.shape).cumsum(axis=2)
    data = (data + 0.01 * noise).astype(np.float32)
    if with_exceptions:
        data[1, 3, 4] = np.nan
    encoded = chunk.encode(
        data, nbits, level=1, coder=coder, predictor=predictor, range_coding=True
    )
    return data, encoded


@pytest.mark.parametrize("nbits", [2, 6, 8, 12])
@pytest.mark.parametrize("coder", [0, 1])
def test_range_coded_blocks_are_written_and_read(nbits, coder):
    data, encoded = smooth(nbits, coder)
    parsed, blocks = blocks_of(encoded)
    assert encoded[4] == 3 and parsed.header.range_coded
    assert blocks[0] == 3  # one block, range-coded
    (length,) = struct.unpack_from("<I", blocks, 1)
    assert len(blocks) == 5 + length
    assert length + 1 < nbits * ((2 * 40 * 40 + 7) // 8)  # smaller than the bit planes
    decoded = CODEC.decode(encoded)
    assert_within_bound(data, decoded, nbits)
    # Without range coding: version 2, bit planes, larger (but by the few bytes the
    # encoder's estimate, a zstd frame of its own, misjudges on tiny blocks).
    plain = chunk.encode(
        data, nbits, level=1, coder=coder, predictor="interpolation", range_coding=False
    )
    assert plain[4] == 2 and len(plain) > len(encoded) - 8


def test_range_coding_gains_on_real_fields_at_8_bits(real_fields):
    for name in ("eraint_z", "eraint_u", "eraint_v"):
        field = real_fields[name]
        coded = chunk.encode(field, 8, level=1)
        assert coded[4] == 3
        plain = chunk.encode(field, 8, level=1, range_coding=False)
        assert len(coded) < 0.9 * len(plain), name
        assert_within_bound(field, chunk.decode(coded), 8)


def test_lorenzo_only_chunk_is_range_coded_or_version_1():
    # Rough integer steps: "auto" keeps Lorenzo; range coding makes it version 3, and a
    # chunk whose blocks keep bit planes stays version 1 byte for byte.
    rng = np.random.default_rng(1)
    data = np.minimum(rng.geometric(0.6, (2, 30, 40)), 5).astype(np.float32).cumsum(axis=2)
    encoded = chunk.encode(data, 8, level=1)
    parsed, blocks = blocks_of(encoded)
    assert encoded[4] == 3 and parsed.header.predictors.tolist() == [0, 0] and blocks[0] == 3
    assert_within_bound(data, chunk.decode(encoded), 8)
    # Where zstd codes the bit planes smaller, the chunk is version 1, as before.
    flat = np.tile(np.arange(400, dtype=np.float32) ** 2, (2, 30, 1))
    lorenzo = chunk.encode(flat, 8, level=1, predictor="lorenzo")
    assert lorenzo[4] == 1 and chunk.encode(flat, 8, level=1) == lorenzo


def rebuilt(parsed, blocks: bytes, range_coded=True) -> bytes:
    header = dataclasses.replace(parsed.header, coder=0, range_coded=range_coded)
    return _format.pack(header, [blocks], len(blocks), None)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda b: b[:1] + struct.pack("<I", 4) + b[5:9], "4 range-coded bytes for 3200"),
        (lambda b: b[:1] + struct.pack("<I", 10**6) + b[5:], "range-coded bytes for 3200"),
        (lambda b: b[:1] + struct.pack("<I", len(b) - 6) + b[5:-1], "do not fill their"),
        (lambda b: b[:1] + struct.pack("<I", len(b) - 4) + b[5:] + b"\0", "do not fill their"),
    ],
)
def test_crafted_range_coded_blocks_are_refused(edit, match):
    _, encoded = smooth(with_exceptions=False)
    parsed, blocks = blocks_of(encoded)
    with pytest.raises(CorruptChunkError, match=match):
        CODEC.decode(rebuilt(parsed, edit(blocks)))


def test_mode_3_outside_version_3_is_refused():
    _, encoded = smooth(with_exceptions=False)
    parsed, blocks = blocks_of(encoded)
    with pytest.raises(CorruptChunkError, match="unknown mode 3"):
        # (padded to what a version 2 section of this shape may hold)
        CODEC.decode(rebuilt(parsed, blocks + bytes(3205 - len(blocks)), range_coded=False))


@pytest.mark.parametrize("nbits", [13, 16, 24])
def test_range_coded_blocks_above_12_bits(nbits):
    # Above 12 bits mode 3 replaces modes 0 and 1 where smaller; at most their size. (The
    # encoder tries it there with a tolerance only, or when told to.)
    data, _ = smooth(with_exceptions=True)
    encoded = chunk.encode(
        data, nbits, level=1, coder=0, predictor="interpolation", range_coding=True
    )
    parsed, blocks = blocks_of(encoded)
    assert encoded[4] == 3 and blocks[0] == 3
    (length,) = struct.unpack_from("<I", blocks, 1)
    assert length <= (nbits + 7) // 8 * data.size - 4
    assert_within_bound(data, CODEC.decode(encoded), nbits)
    with pytest.raises(CorruptChunkError, match="range-coded bytes for 3200 values"):
        CODEC.decode(rebuilt(parsed, blocks[:1] + struct.pack("<I", 10**7) + blocks[5:]))


def test_tolerance_up_to_16_bits_interpolates_and_range_codes(real_fields):
    # eraint_z at a tolerance of 1 needs 14 bits: before, Lorenzo in version 1 (12.35,
    # SZ3 16.6); now interpolation, range-coded (predictor 3: at so fine a tolerance the
    # narrow coarse bins of predictor 4, version 4, do not pay).
    field = real_fields["eraint_z"]
    encoded = chunk.encode(field, None, level=1, tolerance=1.0)
    parsed = _format.parse(memoryview(encoded))
    assert encoded[4] == 3 and parsed.header.nbits == 14
    assert _format.PREDICTOR_INTERPOLATION_TRANSPOSED in parsed.header.predictors
    lorenzo = chunk.encode(field, None, level=1, tolerance=1.0, predictor="lorenzo")
    assert len(encoded) < 0.8 * len(lorenzo)
    decoded = chunk.decode(encoded).astype(np.float64)
    assert (np.abs(decoded - field) <= 1.0 + np.spacing(np.abs(field))).all()


def test_a_lying_shape_cannot_allocate_past_the_range_bound():
    # Mode 3 holds at most 8192 codes a byte: a shape of 2**40 values needs 2**27 bytes.
    _, encoded = smooth(with_exceptions=False)
    crafted = patched(patched(encoded, 32, "<Q", 2**20), 24, "<Q", 2**20)
    with pytest.raises(CorruptChunkError, match="makes a residual section of"):
        CODEC.decode(crafted)


def stored_chunk(coder=1):
    data = np.random.default_rng(0).standard_normal((3, 2, 5)).astype(np.float32)
    data[0, 1, 2] = np.nan
    return data, chunk.encode(data, 24, level=1, coder=coder)


@pytest.mark.parametrize("coder", [0, 1])
def test_stored_chunk_layout(coder):
    data, encoded = stored_chunk(coder)
    assert encoded[:4] == _format.MAGIC and encoded[4] == 3
    assert encoded[5] == _format.FLAG_STORED and encoded[7] == 24
    assert struct.unpack_from("<3Q", encoded, 16) == (3, 2, 5)
    (size,) = struct.unpack_from("<Q", encoded, 40)
    assert len(encoded) == 48 + size + 4
    if encoded[8] == 0:  # raw: byte 0 of every value, then byte 1, ...
        planar = np.frombuffer(encoded, np.uint8, size, 48).reshape(4, -1)
        assert planar.T.copy().view("<f4").reshape(data.shape).tobytes() == data.tobytes()
    assert CODEC.decode(encoded).tobytes() == data.tobytes()
    assert _format.peek_nbits(encoded[: _format.PREFIX_SIZE]) == 24
    assert _format.peek_steps(encoded) is None  # no layer table


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: patched(c, 40, "<Q", 119), "truncated chunk|stored values: 119 bytes"),
        (lambda c: reseal(c[:-5]), "truncated chunk: stored values"),
        (lambda c: reseal(c[:-4] + b"\0"), "stray bytes"),
        (lambda c: patched(c, 5, "<B", 5), "stored chunk flags an exception section"),
        (lambda c: patched(c, 4, "<B", 2), None),  # version 2 has no stored chunks
        (lambda c: patched(c, 16, "<Q", 2**40), "stored values: 120 bytes for shape"),
    ],
)
def test_crafted_stored_chunks_are_refused(edit, match):
    _, encoded = stored_chunk(coder=0)
    with pytest.raises(CorruptChunkError, match=match):
        CODEC.decode(edit(encoded))


@pytest.mark.parametrize(
    "make",
    [
        lambda: smooth(nbits=3)[1],
        lambda: smooth(nbits=8, coder=0, predictor="auto")[1],
        lambda: stored_chunk(coder=0)[1],
        lambda: chunk.encode(np.arange(300, dtype=np.float32).reshape(300, 1, 1), 16, 1),
    ],
)
def test_every_truncation_and_bit_flip_of_version_3_is_refused(make):
    encoded = make()
    assert encoded[4] == 3
    assert_every_truncation_and_bit_flip_refused(encoded)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    st.booleans(),
    st.sampled_from(["range", "range uncoded", "stored", "stored zstd"]),
)
def test_random_damage_of_version_3_with_a_resealed_checksum(damage, truncate, form):
    encoded = {
        "range": lambda: smooth(nbits=5)[1],
        "range uncoded": lambda: smooth(nbits=9, coder=0)[1],
        "stored": lambda: stored_chunk(coder=0)[1],
        "stored zstd": lambda: chunk.encode(np.zeros((200, 1, 1), np.float32) + 2.5, 8, 1),
    }[form]()
    assert encoded[4] == 3
    decode_damaged(encoded, damage, truncate)


# --- Never grow --------------------------------------------------------------------------


def fixed_header(shape) -> int:
    """What a stored chunk adds to its values: prefix, shape, size and checksum."""
    return 16 + 8 * len(shape) + 8 + 4


def test_one_value_per_layer_no_longer_grows_4x():
    # (T, 1, 1): a 16-byte layer table entry per value made 4,000 bytes 16,078.
    series = np.random.default_rng(0).standard_normal(1000).cumsum().astype(np.float32)
    data = series.reshape(1000, 1, 1)
    for nbits in (8, 16, 24):
        encoded = LayerQuantizer(nbits=nbits).encode(data)
        assert len(encoded) <= data.nbytes + fixed_header(data.shape)
        assert LayerQuantizer().decode(encoded).tobytes() == data.tobytes()  # exact
    encoded = LayerQuantizer(tolerance=0.1).encode(data)
    assert len(encoded) <= data.nbytes + fixed_header(data.shape)


shapes = st.one_of(
    st.sampled_from([(1, 1, 1), (1000, 1, 1), (3, 1, 1), (), (1,), (2, 1), (5, 2, 1)]),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9),
)


@st.composite
def arrays(draw):
    shape = draw(shapes)
    kind = draw(st.sampled_from(["noise", "smooth", "specials"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = rng.standard_normal(shape).astype(np.float32)
    if kind == "smooth" and data.ndim:
        data = np.cumsum(data, axis=-1, dtype=np.float32)
    if kind == "specials" and data.size:
        flat = data.reshape(-1)
        flat[rng.integers(0, data.size, 3)] = rng.choice([np.nan, np.inf, -np.inf, 1e30], 3)
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=arrays(), nbits=st.integers(1, 24), coder=st.sampled_from([0, 1]))
def test_never_more_than_the_input_and_a_fixed_header(data, nbits, coder):
    encoded = chunk.encode(data, nbits, level=1, coder=coder)
    assert len(encoded) <= data.nbytes + fixed_header(data.shape)
    assert_within_bound(data, chunk.decode(encoded), nbits)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=arrays(), tolerance=st.floats(1e-6, 10.0))
def test_never_grows_with_a_tolerance(data, tolerance):
    encoded = chunk.encode(data, None, level=1, tolerance=tolerance)
    assert len(encoded) <= data.nbytes + fixed_header(data.shape)
    decoded = chunk.decode(encoded).astype(np.float64)
    x = data.astype(np.float64)
    finite = np.isfinite(x)
    slack = np.spacing(np.abs(data[finite])).astype(np.float64)
    assert (np.abs(decoded[finite] - x[finite]) <= tolerance + slack).all()
    assert np.array_equal(np.isnan(decoded), np.isnan(x))


def test_random_noise_at_24_bits_never_grows():
    data = np.random.default_rng(3).standard_normal((4, 64, 64)).astype(np.float32)
    encoded = chunk.encode(data, 24, level=1)
    assert len(encoded) <= data.nbytes + fixed_header(data.shape)
    assert_within_bound(data, chunk.decode(encoded), 24)
    small = data[:, :3, :2]  # the layer table and block headers outweigh the values
    encoded = chunk.encode(small, 24, level=1)
    assert encoded[5] & _format.FLAG_STORED
    assert chunk.decode(encoded).tobytes() == small.tobytes()


def test_range_coding_by_default_at_8_bits_or_fewer_or_with_a_tolerance(real_fields):
    # Above 8 bits it gained 4 % at 12 bits for an encoder 8 times slower: bit planes stay.
    field = real_fields["eraint_u"]
    assert chunk.encode(field, 8, level=1)[4] == 3
    assert chunk.encode(field, 12, level=1)[4] == 2
    assert chunk.encode(field, 12, level=1, range_coding=True)[4] == 3
    assert chunk.encode(field, None, level=1, tolerance=0.01)[4] == 3  # 13 bits
