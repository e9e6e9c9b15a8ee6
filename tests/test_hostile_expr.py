"""Hostile spec text ends in a located NetspecError, quickly, never another exception.

Each case crashed (TypeError, ZeroDivisionError, ValueError, RecursionError, VisitError) or
ran for minutes before these guards (issue "Hostile input", item 3).
"""

from __future__ import annotations

import pytest
from helpers.cpu import cpu_limit

from netspec.errors import NetspecError, SpecErrors
from netspec.ir.build import load_spec_text

TAIL = "input [1, 8, 8]\nclasses 2\nINPUT -> FC(2) -> SOFTMAX\n"

CASES = {
    # name: (spec text, expected words in the message, expected line:col)
    "tuple_compare": ("N = 2 if (1, 2) < 3 else 1\n" + TAIL, "received the tuple (1, 2)", "1:10"),
    "string_compare": ('N = 2 if "a" < 3 else 1\n' + TAIL, "received the string 'a'", "1:10"),
    "budget_tuple": (TAIL + "budget params <= (1, 2)\n", "budget limit must be a number", "4:18"),
    "budget_string": (TAIL + 'budget params <= "x"\n', "budget limit must be a number", "4:18"),
    "float_overflow": ("N = 1e200 ** 2\n" + TAIL, "too large", "1:5"),
    "computed_overflow": ("N = 10.0 ** 60\n" + TAIL, "the result is too large", "1:5"),
    "zero_negative_power": ("N = 0 ** -1\n" + TAIL, "0 raised to a negative power", "1:5"),
    "power_tower": ("N = ((((10**64)**64)**64)**64)\n" + TAIL, "the result is too large", "1:9"),
    "suffix_ki": ("N = 1ki\n" + TAIL, "unknown number suffix in `1ki`", "1:5"),
    "suffix_kib": ("N = 2kiB\n" + TAIL, "unknown number suffix in `2kiB`", "1:5"),
    "huge_literal": ("N = " + "9" * 5000 + "\n" + TAIL, "is too large", "1:5"),
    "escape_x": ('network a "\\x"\n' + TAIL, "unknown escape `\\x`", "1:11"),
    "lone_surrogate": ('network a "\\ud800"\n' + TAIL, "unknown escape `\\u`", "1:11"),
    "deep_brackets": (
        "input [1, 8, 8]\nclasses 2\nINPUT -> " + "[" * 500 + "RELU" + "]" * 500 + "\n",
        "nested more than 100 deep",
        "3:110",
    ),
    "deep_parens": (
        "N = " + "(" * 500 + "1" + ")" * 500 + "\n" + TAIL,
        "nested more than",
        "1:105",
    ),
    "long_sum": (
        "N = " + " + ".join(["1"] * 20000) + "\n" + TAIL,
        "more than 200 operations",
        "1:5",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_expression_is_a_located_error(name):
    text, words, where = CASES[name]
    with cpu_limit(2.0), pytest.raises((NetspecError, SpecErrors)) as info:
        load_spec_text(text, f"{name}.ns").instantiate()
    message = str(info.value)
    assert f"{name}.ns:{where}:" in message
    assert words in message


def test_escaped_quote_and_bracket_in_a_string_are_fine():
    g = load_spec_text('network a "a\\"[ \\\\ \\n"\n' + TAIL).instantiate()
    assert g.description == 'a"[ \\ \n'


def test_utf8_in_a_string_is_kept_as_written():
    g = load_spec_text('network a "réseau à 2 têtes"\n' + TAIL).instantiate()
    assert g.description == "réseau à 2 têtes"


def test_nesting_up_to_the_limit_still_compiles():
    text = "input [1, 8, 8]\nclasses 2\nINPUT -> " + "[" * 99 + "RELU" + "]" * 99 + " -> FC(2)\n"
    assert load_spec_text(text).instantiate().output_shape == (2,)
