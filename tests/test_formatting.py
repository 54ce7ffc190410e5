"""gradtrace/formatting.py: how numbers, shapes and values are written, everywhere."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradtrace import formatting as fmt


@dataclass
class _Stats:
    numel: int
    mean: float
    min: float
    max: float


@dataclass
class _Value:
    array: object  # what formatting reads: a Value's numpy view
    numel: int
    stats: _Stats
    shape: tuple


def test_number_short_exponents_and_specials():
    assert fmt.number(0.000012345) == "1.234e-5"
    assert fmt.number(3) == "3" and fmt.number(True) == "True"
    assert fmt.number(float("nan")) == "nan"
    assert fmt.number(float("-inf")) == "-inf"
    assert fmt.number(-0.0) == "0"
    assert fmt.number(2.0 / 3, digits=2) == "0.67"


def test_slide_number_uses_a_real_minus_and_fewer_digits_far_from_one():
    assert fmt.slide_number(-1.5) == "\u22121.5"
    assert fmt.slide_number(123456.0) == "1.23e+05"
    assert fmt.slide_number(None) == "nan"
    assert fmt.slide_number(float("-inf")) == "\u2212∞"


def test_table_number_leaves_non_floats_alone():
    assert fmt.table_number(None) == ""
    assert fmt.table_number(7) == "7"
    assert fmt.table_number(1 / 3) == "0.333333"


def test_shapes():
    assert fmt.shape((2, 1)) == "(2, 1)"
    assert fmt.shape([3]) == "(3,)"
    assert fmt.shape(()) == "()"
    assert fmt.shape(None) == ""
    assert fmt.shape_times((2, 1)) == "2×1"
    assert fmt.shape_times(()) == "scalar"


def test_fraction_writes_lecture_constants():
    assert fmt.fraction(0.5) == "1/2"
    assert fmt.fraction(-1 / 6) == "-1/6"
    assert fmt.fraction(2.0) == "2"
    assert fmt.fraction(0.3) == "0.3"
    assert fmt.fraction(0) == "0"


def test_values_small_zero_and_statistics():
    s = _Stats(3, 2.0, 1.0, 3.0)
    assert fmt.value(_Value(np.array([1.0, -2.0]), 2, s, (2,))) == "[1, \u22122]"
    assert fmt.value(_Value(np.zeros(10), 10, s, (10,))) == "zeros"
    assert fmt.value(_Value(None, 10, _Stats(10, 1e-12, -1.0, 1.0), (10,))) == "mean 0, \u22121 … 1"
    assert fmt.value(_Value(None, 0, _Stats(0, 0.0, 0.0, 0.0), (0, 3))) == "0×3 (empty)"
    assert fmt.value(None) == "None"
    assert fmt.short_value(_Value(np.array([0.123456]), 1, s, ())) == "0.123"
    assert fmt.short_value(_Value(None, 10, s, (10,))) == "μ 2"


def test_ellipsize():
    assert fmt.ellipsize("abcdef", 4) == "abc…"
    assert fmt.ellipsize("abc", 4) == "abc"
    assert fmt.ellipsize("abc", 0) == ""
