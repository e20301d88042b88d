"""Large CSV tables written fast: a matrix of floats formatted as ``"%.8g"`` formats
each number, in numpy, a block of rows at a time.

``predictions.csv`` at 200,000 test images and 165 classes holds 66 million numbers;
Python's ``%`` formatting them one row at a time took 23 s. Here the digits of every
number in a block come out of integer arithmetic and one gather into a character
buffer; only numbers outside what that handles (infinities, NaN, magnitudes beyond
1e±290) are formatted by Python, one by one.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

WIDTH = 16  # the longest "%.8g" text: -1.2345678e-100 is 15 characters
ROWS = 256  # rows formatted at once (bounds the block's buffers)
# "0000".."9999" as little-endian words, the first digit in the lowest byte
_FOUR = np.frombuffer("".join(f"{i:04d}" for i in range(10_000)).encode(),
                      dtype="<u4").astype(np.uint64)
_ONES = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)  # k low bytes
# the significant digits of a four-digit group: 4 less its trailing zeros (0 for 0000)
_SIG4 = np.array([0] + [4 - (len(f"{i:04d}") - len(f"{i:04d}".rstrip("0")))
                        for i in range(1, 10_000)], dtype=np.int64)
_DOT, _E, _MINUS, _PLUS = (np.uint64(ord(c)) for c in ".e-+")
_ZEROS = np.array([int.from_bytes(b"0." + b"0" * z, "little") for z in range(4)],
                  dtype=np.uint64)  # "0." and 0-3 zeros: before 1e-4 <= |v| < 1's digits


_QUOTED = re.compile('[,"\r\n]')  # what makes the csv module quote a field
_SCALE = 10.0 ** np.arange(-300, 301)  # 10^(7 - e) for the exponents handled here


def csv_field(text: str) -> str:
    """``text`` as the csv module's minimal quoting writes it."""
    if _QUOTED.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


# how near a scaled value's fraction must be to 0.5 to be rounded by Python: far above the
# product's rounding error (a few units in the last place of numbers below 10^8, ~1e-8)
_NEAR_TIE = 1e-6


def _digits(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(8-digit mantissa, decimal exponent) of positive finite ``a``: a ≈ m·10^(e-7)."""
    e = np.floor(np.log10(a)).astype(np.int64)
    scaled = a * _SCALE[7 - e + 300]
    m = np.rint(scaled).astype(np.int64)
    for wrong, step in ((m < 10**7, -1), (m >= 10**8, 1)):  # log10's floor off by one
        if wrong.any():
            e[wrong] += step
            scaled[wrong] = a[wrong] * _SCALE[7 - e[wrong] + 300]
            m[wrong] = np.rint(scaled[wrong]).astype(np.int64)
    # within rounding of a tie (a 9th digit of 5), the scaled product may fall on the
    # wrong side of it or on it: those few take Python's correctly rounded digits
    for i in np.flatnonzero(np.abs(scaled - np.floor(scaled) - 0.5) < _NEAR_TIE).tolist():
        digits, exponent = f"{a[i]:.7e}".split("e")
        m[i], e[i] = int(digits.replace(".", "")), int(exponent)
    return m, e


def _shifted(x: np.ndarray, bytes_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (uint64) moved ``bytes_`` (0..15) bytes up a 128-bit (low, high) pair.
    numpy defines a shift by 64 bits or more as 0 (and the unsigned differences below
    wrap around to such shifts), so no case needs a branch."""
    bits = bytes_.astype(np.uint64) * np.uint64(8)
    return x << bits, (x >> (np.uint64(64) - bits)) | (x << (bits - np.uint64(64)))


def format_g8(values: np.ndarray, comma: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``values`` (1-D float) as ``"%.8g" % value`` writes it (``comma``: with a
    "," after it): a (n, WIDTH) uint8 buffer of characters, zeros after each text, and
    each text's length. The text is built as a 128-bit
    little-endian pair of words: the digits come from a table of four-digit words, and
    each piece (the leading "0.000", the digits, the dot, the exponent) is shifted into
    place, a few integer operations a number."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    a = np.abs(v)
    plain = np.isfinite(v) & (a > 1e-290) & (a < 1e290)
    m = np.full(n, 10**7, np.int64)
    e = np.zeros(n, np.int64)
    if plain.all():
        m, e = _digits(a)
    else:
        m[plain], e[plain] = _digits(a[plain])
    upper, lower = np.divmod(m, 10_000)
    digits = _FOUR[upper] | (_FOUR[lower] << np.uint64(32))  # 8 ASCII digits
    sig = np.where(lower == 0, _SIG4[upper], 4 + _SIG4[lower])  # m >= 10^7: upper > 0
    kept = digits & _ONES[sig]  # the significant ones; zeros past them are dropped
    low = np.zeros(n, np.uint64)
    high = np.zeros(n, np.uint64)
    length = np.zeros(n, np.int64)

    small = np.flatnonzero((e < 0) & (e >= -4))  # 0.00dddd
    if len(small):
        z = -e[small] - 1
        at = (np.uint64(8) * (2 + z).astype(np.uint64))  # 16..40 bits: no word overflows
        word = kept[small]
        low[small] = _ZEROS[z] | (word << at)
        high[small] = word >> (np.uint64(64) - at)
        length[small] = 2 + z + sig[small]
    big = np.flatnonzero((e >= 0) & (e < 8))  # ddd.ddd
    if len(big):
        whole, s, k = e[big] + 1, sig[big], kept[big]
        frac = s > whole
        dot_low, dot_high = _shifted(np.where(frac, _DOT, np.uint64(0)), whole)
        rest_low, rest_high = _shifted(
            np.where(frac, k >> (np.uint64(8) * whole.astype(np.uint64)), np.uint64(0)),
            whole + 1)
        low[big] = (digits[big] & _ONES[whole]) | dot_low | rest_low
        high[big] = dot_high | rest_high
        length[big] = np.where(frac, s + 1, whole)
    far = np.flatnonzero((e < -4) | (e >= 8))  # d.ddde-05
    if len(far):
        s, x, k = sig[far], np.abs(e[far]), kept[far]
        more = s > 1
        after = np.where(more, _DOT | ((k >> np.uint64(8)) << np.uint64(8)), np.uint64(0))
        body = np.where(more, s + 1, 1)  # "d" or "d.ddd": the tail goes after it
        three = x >= 100
        shown = np.where(three, x, x % 100).astype(np.uint64)
        zero = np.uint64(ord("0"))
        exponent = np.where(three,
                            (shown // 100 + zero) | ((shown // 10 % 10 + zero) << np.uint64(8))
                            | ((shown % 10 + zero) << np.uint64(16)),
                            (shown // 10 + zero) | ((shown % 10 + zero) << np.uint64(8)))
        tail = (_E | (np.where(e[far] < 0, _MINUS, _PLUS) << np.uint64(8))
                | (exponent << np.uint64(16)))
        tail_low, tail_high = _shifted(tail, body)
        low[far] = (k & _ONES[1]) | (after << np.uint64(8)) | tail_low
        high[far] = (after >> np.uint64(56)) | tail_high
        length[far] = body + np.where(three, 5, 4)
    zero = v == 0
    low[zero], high[zero], length[zero] = ord("0"), 0, 1
    negative = (v < 0) | (zero & np.signbit(v))
    if negative.any():  # a leading '-'
        rows = np.flatnonzero(negative)
        lo, hi = _shifted(low[rows], np.ones(len(rows), np.int64))
        hi |= high[rows] << np.uint64(8)
        low[rows], high[rows] = lo | _MINUS, hi
        length[rows] += 1
    words = np.empty((n, 2), "<u8")
    words[:, 0], words[:, 1] = low, high
    out = words.view(np.uint8).reshape(n, WIDTH)
    for i in np.flatnonzero(~plain & ~zero):  # inf, NaN, the far exponents: by Python
        text = f"{v[i]:.8g}".encode()
        out[i] = 0
        out[i, :len(text)] = np.frombuffer(text, np.uint8)
        length[i] = len(text)
    if comma:  # at most 15 characters before it: it fits
        out[np.arange(n), length] = ord(",")
        length += 1
    return out, length


def _block_rows(block: np.ndarray) -> list[bytes]:
    if block.shape[1] == 0:
        return [b""] * len(block)
    chars, length = format_g8(block.reshape(-1), comma=True)
    blob = chars[np.arange(WIDTH)[None, :] < length[:, None]].tobytes()
    ends = np.cumsum(length.reshape(block.shape).sum(axis=1)).tolist()
    rows, start = [], 0
    for end in ends:
        rows.append(blob[start:end - 1])  # without the row's last comma
        start = end
    return rows


def float_row_blocks(blocks: Iterable[np.ndarray]) -> Iterator[list[bytes]]:
    """For each of ``blocks`` (n x C floats, in order), its rows as CSV text: the numbers
    as ``"%.8g"`` writes them, joined by commas (no line end). The blocks are formatted
    on every core (numpy lets go of the GIL), a few ahead of the caller, so that what the
    caller does with one block overlaps the formatting of the next ones."""
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        ahead: deque = deque()
        for block in blocks:
            ahead.append(pool.submit(_block_rows, np.asarray(block)))
            if len(ahead) > 2 * workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
