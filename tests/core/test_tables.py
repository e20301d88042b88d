"""The fast CSV writer against Python's own formatting and the csv module."""

import numpy as np
import pytest

from olsdesk.core.tables import csv_field, float_row_blocks, format_g8


def _texts(values):
    chars, length = format_g8(np.asarray(values, dtype=np.float64))
    return [chars[i, :length[i]].tobytes().decode() for i in range(len(values))]


def test_numbers_are_written_as_python_writes_percent_g8():
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.random(20_000), rng.random(20_000) * 1e-6, rng.dirichlet(np.full(50, 0.05), 200).ravel(),
        10 ** rng.uniform(-300, 300, 20_000) * rng.choice([-1, 1], 20_000),
        rng.integers(-10**9, 10**9, 2_000).astype(float),
        [0.0, -0.0, 1.0, -1.0, 1e-4, 9.9999999e-5, 9.99999996e-5, 0.99999999, 0.999999995,
         1e-5, 7e-5, 123456789.0, 12345678.0, 1e7, 1e8, 99999999.5, 0.5, 0.1, 1 / 3,
         1e-100, 1.5e-99, 1e100, 2.5e-10, np.inf, -np.inf, np.nan, 5e-324, 1e-300, 1e300,
         1e-290, 1.7976931348623157e308]])
    assert _texts(values) == [f"{v:.8g}" for v in values]


def test_a_ninth_digit_of_five_rounds_as_python_rounds_the_exact_value():
    """Values whose 9th significant digit is a 5 lie within rounding of a tie: scaled by
    a power of ten in floating point they can land on the tie itself (2.43856805e-06,
    found writing 200,000 x 165 probabilities, scales to 24385680.5 and rounded to even),
    where Python rounds the exact binary value, here just above it."""
    rng = np.random.default_rng(2)
    mantissas = rng.integers(10**7, 10**8, 20_000)
    exponents = rng.integers(-12, 9, 20_000)
    values = [2.43856805e-06] + [float(f"{m}5e{x}") for m, x in
                                 zip(mantissas.tolist(), exponents.tolist(), strict=True)]
    assert _texts(values) == [f"{v:.8g}" for v in values]


@pytest.mark.parametrize("rows", [1, 3, 700])
def test_rows_are_the_csv_modules_at_any_block_size(rows):
    import csv
    import io

    def float_rows(matrix):
        blocks = (matrix[at:at + rows] for at in range(0, len(matrix), rows))
        return [row for block in float_row_blocks(blocks) for row in block]

    matrix = np.random.default_rng(1).dirichlet(np.full(7, 0.2), 1000)
    matrix[5, 2] = np.nan
    out = io.StringIO()
    csv.writer(out).writerows([[f"{v:.8g}" for v in row] for row in matrix])
    assert b"\r\n".join(float_rows(matrix)) + b"\r\n" == out.getvalue().encode()
    assert float_rows(np.zeros((3, 0))) == [b""] * 3


def test_text_fields_are_quoted_as_the_csv_module_quotes_them():
    import csv
    import io

    for text in ["plain", "a,b", 'say "hi"', "two\nlines", "cr\r", "", "CT/lung/normal"]:
        out = io.StringIO()
        csv.writer(out).writerow([text, "x"])
        assert f"{csv_field(text)},x\r\n" == out.getvalue()
