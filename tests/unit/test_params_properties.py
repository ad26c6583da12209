"""Property-based tests of the parameter parser (hypothesis): whatever text a client sends in any
parameter, the parser either accepts it or raises ParameterError naming an input parameter; nothing else
escapes (which the API would turn into a 500), and accepted values are within their documented ranges."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geotrain.errors import ParameterError
from geotrain.task import catalog
from geotrain.task.params import INPUT_NAMES, parse

BASE = {"in_folder": "/fileShares/a/b", "output_name": '{"name": "m"}', "model_type": "UNET"}

# texts a client might send: anything, JSON of any shape, numbers, keywords, paths with tricks in them
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
texts = st.one_of(
    st.text(max_size=60),
    json_values.map(json.dumps),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["true", "FALSE", "", " ", "null", "NaN", "-1", "0", "1e309", "-inf", "[]", "{}", '{"uri": ""}']),
    st.sampled_from(catalog.ALL_BACKBONES + tuple(catalog.BUILT)),
    st.text(alphabet="/\\.:\x00~ab", max_size=30),
)
forms = st.fixed_dictionaries({}, optional={name: texts for name in INPUT_NAMES})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(forms)
def test_any_form_is_parsed_or_refused_naming_a_parameter(form: dict[str, str]) -> None:
    try:
        parsed = parse({**BASE, **form})
    except ParameterError as exc:
        assert exc.param in (*INPUT_NAMES, "request"), exc.param
        assert exc.details and exc.details[0].startswith("Invalid value for parameter '")
        return
    assert parsed.batch_size >= 1 and parsed.max_epochs >= 1
    assert 0 < parsed.validation_percent < 100
    assert parsed.model_type in catalog.BUILT


@settings(max_examples=300, deadline=None, database=None)
@given(name=st.sampled_from(INPUT_NAMES), value=texts)
def test_one_bad_parameter_is_named_in_the_error(name: str, value: str) -> None:
    try:
        parse({**BASE, name: value})
    except ParameterError as exc:
        assert exc.param == name or exc.param in INPUT_NAMES, (name, exc.param)


def test_an_infinite_integer_is_refused_naming_the_parameter() -> None:
    """What hypothesis once found: batch_size 1E309 overflowed into a 500."""
    for value in ("1E309", "-1e309", "inf"):
        try:
            parse({**BASE, "batch_size": value})
        except ParameterError as exc:
            assert exc.param == "batch_size"
        else:
            raise AssertionError(f"batch_size {value} was accepted")
