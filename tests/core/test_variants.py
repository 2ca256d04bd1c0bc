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


def test_column_specs_resolve_to_weights():
    from stance_studio.core.variants import column_weights

    saved = [parse_variant("a=0.5,b=-1")]
    saved = [type(saved[0])("mix", saved[0].weights)]
    fits = {"a", "b"}.__contains__
    blend = {"b": 0.3, "a": 0.2}
    assert column_weights("base", blend, saved, fits) == ()
    assert column_weights("@blend", blend, saved, fits) == (("a", 0.2), ("b", 0.3))
    assert column_weights("stance:a", blend, saved, fits) == (("a", 1.0),)
    assert column_weights("stance:zz", blend, saved, fits) is None  # not in the library or unfit
    assert column_weights("variant:mix", blend, saved, fits) == (("a", 0.5), ("b", -1.0))
    assert column_weights("variant:mix", blend, saved, {"a"}.__contains__) is None
    assert column_weights("variant:gone", blend, saved, fits) is None
    assert column_weights("nonsense", blend, saved, fits) is None
