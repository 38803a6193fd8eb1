"""Label Studio brush RLE: the rle-pack bit stream of an RGBA image, encoded and decoded with numpy.

The `rle` of a `brushlabels` region is thi.ng's rle-pack stream, as written by
`label_studio_sdk.converter.brush.encode_rle` and read by its `decode_rle`: a 53-bit header
(32 bits: number of words, 5 bits: word size - 1, 4 x 4 bits: the four count-field sizes - 1),
then records of 1 bit "run" flag, 2 bits size class, `size` bits of count - 1, and one word (a
run) or count words (literal values); zero bits pad the stream to whole bytes. The words are the
H x W x 4 RGBA image in row-major order. Use it through `mlcdseg.masks.codecs`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from mlcdseg.errors import MaskFormatError

_CHANNELS = 4  # Label Studio brush masks are RGBA images
_HEADER_BITS = 32 + 5 + 4 * 4
_SDK_WORD_SIZE = 8
_SDK_COUNT_SIZES = (3, 4, 8, 16)  # bits of the count field for size classes 0..3
_SDK_CHUNK = 1 << 16  # the SDK splits runs longer than this into 65536-word records


def encode_pixels(flat: np.ndarray) -> list[int]:
    """Brush RLE bytes (ints 0..255) of 0/1 pixels (uint8, shape (N,), N >= 1) as RGBA words.

    A pixel's four words are 255 where it is 1, else 0; the bytes are exactly what
    `label_studio_sdk.converter.brush.encode_rle` writes for that word array.
    """
    if flat.size * _CHANNELS >= 1 << 32:
        raise MaskFormatError(f"mask of {flat.size} pixels is too large for the 32-bit brush RLE header")
    run_starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    run_words = np.diff(np.concatenate((run_starts, [flat.size]))) * _CHANNELS
    # Every run spans >= 4 words (four equal channels), so the SDK never emits its single-value
    # literal records here. Runs up to 256 words take one record of the smallest class that holds
    # the count; longer runs take class 3 records: 65536 words while more than 65536 remain, then
    # the rest.
    extra_chunks = np.where(run_words > 256, (run_words - 1) // _SDK_CHUNK, 0)
    records_per_run = extra_chunks + 1
    record_run = np.repeat(np.arange(run_words.size), records_per_run)
    first_record = np.cumsum(records_per_run) - records_per_run
    is_full_chunk = np.arange(record_run.size) - first_record[record_run] < extra_chunks[record_run]
    record_words = np.where(
        is_full_chunk, _SDK_CHUNK, run_words[record_run] - extra_chunks[record_run] * _SDK_CHUNK
    )
    size_class = np.where(
        run_words[record_run] > 256, 3, np.searchsorted(np.array([8, 16, 256]), record_words)
    )
    count_bits = np.array(_SDK_COUNT_SIZES, dtype=np.uint64)[size_class]
    value = flat[run_starts][record_run].astype(np.uint64) * np.uint64(255)
    record_bits = count_bits + np.uint64(3 + _SDK_WORD_SIZE)
    code = (
        (np.uint64(1) << (record_bits - np.uint64(1)))
        | (size_class.astype(np.uint64) << (count_bits + np.uint64(_SDK_WORD_SIZE)))
        | ((record_words.astype(np.uint64) - np.uint64(1)) << np.uint64(_SDK_WORD_SIZE))
        | value
    )
    header = (
        (flat.size * _CHANNELS) << (5 + 16)
        | (_SDK_WORD_SIZE - 1) << 16
        | sum((size - 1) << (12 - 4 * index) for index, size in enumerate(_SDK_COUNT_SIZES))
    )
    codes = np.concatenate((np.array([header], dtype=np.uint64), code))
    widths = np.concatenate((np.array([_HEADER_BITS], dtype=np.uint64), record_bits))
    # The SDK pads with 8 - (bits % 8) zero bits: 1..8, a whole zero byte when already aligned.
    return _pack_codes(codes, widths, int(widths.sum()) // 8 + 1).tolist()


def _pack_codes(codes: np.ndarray, widths: np.ndarray, byte_count: int) -> np.ndarray:
    """uint8 (byte_count,) stream of each uint64 code's low `width` bits, in order.

    A code starting at bit phase (offset % 16) must fit 64 bits: width + 15 <= 64, except at offset 0.
    """
    offsets = np.cumsum(widths) - widths
    aligned = codes << (np.uint64(64) - widths - (offsets & np.uint64(15)))
    parts = aligned.astype(">u8").view(">u2").ravel()  # four big-endian 16-bit units per code
    targets = (offsets >> np.uint64(4)).astype(np.int64)[:, None] + np.arange(4)
    # Codes occupy disjoint bits, so adding their 16-bit parts is the same as OR-ing them.
    units = np.bincount(targets.ravel(), weights=parts, minlength=byte_count // 2 + 4)
    return units.astype(">u2").view(np.uint8)[:byte_count]


def decode_alpha(rle: Sequence[int] | bytes | np.ndarray, pixel_count: int) -> np.ndarray:
    """Bool (pixel_count,) alpha > 0 of each RGBA pixel of a brush RLE; RGB is ignored.

    Accepts any rle-pack stream (any word size 1..32 and count sizes, run and literal records).
    Raises MaskFormatError when the bytes are not 0..255 ints, the header's word count is not
    pixel_count * 4, or the records are truncated or overrun that count; trailing bytes are ignored.
    """
    data = _rle_bytes(rle)
    padded = np.concatenate((data, np.zeros(8, np.uint8)))
    header = int.from_bytes(padded[:8].tobytes(), "big")
    word_count = header >> 32
    word_size = ((header >> 27) & 31) + 1
    count_sizes = tuple(((header >> (23 - 4 * index)) & 15) + 1 for index in range(4))
    bit_count = data.size * 8
    if bit_count < _HEADER_BITS:
        raise MaskFormatError(f"brush RLE of {data.size} bytes is shorter than its 53-bit header")
    if word_count != pixel_count * _CHANNELS:
        raise MaskFormatError(
            f"brush RLE holds {word_count} values but {pixel_count} RGBA pixels need "
            f"{pixel_count * _CHANNELS}; check original_height/original_width of the region"
        )
    longest_record = 3 + max(count_sizes) + word_size  # bits; a single word never needs more
    if bit_count > _HEADER_BITS + word_count * longest_record + 64:
        raise MaskFormatError(
            f"brush RLE of {data.size} bytes is far longer than {word_count} values can need"
        )
    windows = _bit_windows(padded, data.size)
    starts = _record_starts(windows, word_size, count_sizes, bit_count)
    return _expand_records(windows, starts, padded, word_size, count_sizes, word_count, bit_count)


def _rle_bytes(rle: Sequence[int] | bytes | np.ndarray) -> np.ndarray:
    """The RLE as a uint8 array; raise MaskFormatError for anything but a sequence of ints 0..255."""
    if isinstance(rle, np.ndarray):
        if rle.ndim != 1 or not np.issubdtype(rle.dtype, np.integer):
            raise MaskFormatError(f"brush RLE must be a 1-D array of ints, got {rle.dtype} {rle.shape}")
        if rle.size and (rle.min() < 0 or rle.max() > 255):
            raise MaskFormatError("brush RLE values must be bytes in 0..255")
        return rle.astype(np.uint8)
    if isinstance(rle, (bytes, bytearray, memoryview)):
        return np.frombuffer(rle, np.uint8)
    if not isinstance(rle, Sequence) or isinstance(rle, str):
        raise MaskFormatError(f"brush RLE must be a list of ints 0..255, got {type(rle).__name__}")
    try:
        return np.frombuffer(bytes(rle), np.uint8)
    except (TypeError, ValueError) as error:  # non-int item, or an int outside 0..255
        raise MaskFormatError(f"brush RLE must be a list of ints 0..255: {error}") from error


def _bit_windows(padded: np.ndarray, byte_count: int) -> np.ndarray:
    """uint32 (8, byte_count): row r, column k holds the 32 stream bits starting at bit 8k + r."""
    wide = padded.astype(np.uint32)
    words = wide[:byte_count] << 24 | wide[1 : byte_count + 1] << 16 | wide[2 : byte_count + 2] << 8
    words |= wide[3 : byte_count + 3]
    return words[None, :] << np.arange(8, dtype=np.uint32)[:, None]


@functools.lru_cache(maxsize=8)
def _record_length_table(word_size: int, count_sizes: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """Record length in bits for every value of a record's leading (3 + max size) bits."""
    key_bits = 3 + max(count_sizes)
    keys = np.arange(1 << key_bits, dtype=np.int64)
    sizes = np.array(count_sizes, dtype=np.int64)[(keys >> (key_bits - 3)) & 3]
    counts = (keys >> (key_bits - 3 - sizes)) & ((1 << sizes) - 1)
    values = np.where(keys >> (key_bits - 1) == 1, 1, counts + 1)
    table = (3 + sizes + word_size * values).astype(np.int32)
    table.flags.writeable = False  # shared by every decode through the cache
    return table, key_bits


def _record_starts(
    windows: np.ndarray, word_size: int, count_sizes: tuple[int, ...], bit_count: int
) -> np.ndarray:
    """Bit offsets (int64) of the records chained from the header up to the end of the stream.

    A record's length depends only on its first bits, so the next record's offset is computed at
    every bit offset at once; only following that chain is a (short, per-record) Python loop.
    """
    table, key_bits = _record_length_table(word_size, count_sizes)
    lengths = np.take(table, windows >> np.uint32(32 - key_bits)).T.ravel()  # bit order
    offset_type = np.int32 if bit_count < 1 << 30 else np.int64
    following = memoryview(np.arange(lengths.size, dtype=offset_type) + lengths)
    offset, visited = _HEADER_BITS, []
    while offset < bit_count:
        visited.append(offset)
        offset = following[offset]
    return np.fromiter(visited, dtype=np.int64, count=len(visited))


def _expand_records(
    windows: np.ndarray,
    starts: np.ndarray,
    padded: np.ndarray,
    word_size: int,
    count_sizes: tuple[int, ...],
    word_count: int,
    bit_count: int,
) -> np.ndarray:
    """Bool (word_count / 4,) alpha > 0 per pixel from the records at bit offsets `starts`."""
    byte_count = windows.shape[1]
    leading = windows.ravel()[(starts & 7) * byte_count + (starts >> 3)]
    is_run = (leading >> np.uint32(31)).astype(bool)
    sizes = np.array(count_sizes, dtype=np.uint32)[(leading >> np.uint32(29)) & np.uint32(3)]
    record_words = ((leading << np.uint32(3)) >> (np.uint32(32) - sizes)).astype(np.int64) + 1
    covered = np.cumsum(record_words)
    last = int(np.searchsorted(covered, word_count))
    if last == covered.size:
        raise MaskFormatError(
            f"brush RLE is truncated: its records hold {covered[-1]} of {word_count} values"
        )
    if covered[last] != word_count:
        raise MaskFormatError(f"brush RLE records overrun its declared {word_count} values")
    value_counts = np.where(is_run, 1, record_words)[: last + 1]
    first_value = starts[: last + 1] + 3 + sizes[: last + 1]
    if first_value[-1] + value_counts[-1] * word_size > bit_count:
        raise MaskFormatError("brush RLE is truncated inside its last record")
    if is_run[: last + 1].all():  # every record is a run: one value each
        value_offsets, entry_words = first_value, record_words[: last + 1]
    else:
        entry_record = np.repeat(np.arange(last + 1), value_counts)
        first_entry = np.cumsum(value_counts) - value_counts
        within = np.arange(entry_record.size) - first_entry[entry_record]
        value_offsets = first_value[entry_record] + within * word_size
        entry_words = np.where(is_run[entry_record], record_words[entry_record], 1)
    values = _read_fields(padded, value_offsets, word_size)
    entry_ends = np.cumsum(entry_words)
    # Words 4j + 3 are alpha values; [start, end) holds (end >> 2) - (start >> 2) of them.
    alpha_counts = (entry_ends >> 2) - ((entry_ends - entry_words) >> 2)
    return np.repeat(values != 0, alpha_counts)


def _read_fields(padded: np.ndarray, bit_offsets: np.ndarray, field_bits: int) -> np.ndarray:
    """uint64 values of the `field_bits`-bit (<= 32) big-endian fields at `bit_offsets`."""
    first_byte = bit_offsets >> 3
    byte_count = (7 + field_bits + 7) // 8  # bytes that hold the field at any bit phase (<= 5)
    window = np.zeros(bit_offsets.size, dtype=np.uint64)
    for byte in range(byte_count):
        window = window << np.uint64(8) | padded[first_byte + byte].astype(np.uint64)
    shift = np.uint64(8 * byte_count - field_bits) - (bit_offsets & 7).astype(np.uint64)
    return (window >> shift) & np.uint64((1 << field_bits) - 1)
