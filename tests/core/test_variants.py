import pytest

from stance_studio.core.errors import VariantSpecError
from stance_studio.core.variants import parse_variant


def test_base_and_single_name():
    assert parse_variant("base").is_base
    v = parse_variant("curious")
    assert v.weights == (("curious", 1.0),)


def test_blend_with_negative_and_exponent():
    v = parse_variant("curious=0.7, confident=-0.3,x=1e-1")
    assert v.weights == (("curious", 0.7), ("confident", -0.3), ("x", 0.1))
    assert v.spec == "curious=0.7,confident=-0.3,x=0.1"


@pytest.mark.parametrize("spec", ["", "a=", "a=b", "a=1,a=2", "=1"])
def test_bad_specs_are_clear_errors(spec):
    with pytest.raises(VariantSpecError):
        parse_variant(spec)
