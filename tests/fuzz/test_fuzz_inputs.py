"""Fuzzing the three readers of untrusted input: the checkpoint reader (headers,
metadata, tensor names, dtypes, shapes, raw bytes), the dataset parser and the
blend-spec parser. Any input gives a result or the app's own error, never another
exception. Derandomised with a fixed number of examples, so CI runs it the same way
in well under a minute.
"""

from __future__ import annotations

import itertools
import json
import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stance_studio.core.checkpoints import FORMAT, load_checkpoint, read_header
from stance_studio.core.datasets import encode_example, load_dataset
from stance_studio.core.errors import StanceStudioError, VariantSpecError
from stance_studio.core.library import Library
from stance_studio.core.variants import MAX_WEIGHT, parse_variant

FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_counter = itertools.count()

DTYPES = ["F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "C64", "X9", ""]
DTYPE_SIZE = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I8": 1, "I16": 2, "I32": 4, "I64": 8, "U8": 1, "BOOL": 1,
              "F8_E4M3": 1, "F8_E5M2": 1}
PARAM = "model.layers.0.self_attn.q_proj.weight"


def rarely(draw) -> bool:
    """True about one time in eight (hypothesis leans to small draws, so the common,
    well-formed case is the small one and the broken case the rare one)."""
    return draw(st.integers(0, 7)) == 7


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
tensor_names = st.one_of(
    st.sampled_from([f"{PARAM}:delta", f"{PARAM}:A", f"{PARAM}:B", "model.norm.weight:delta", "x:delta", ":delta",
                     "a:b:A", "noColon", ""]),
    st.text(max_size=30),
)


def sometimes(draw) -> bool:
    return draw(st.integers(0, 3)) == 3


@st.composite
def layouts(draw) -> dict:
    """Tensor names, dtypes and shapes: mostly a well-formed dense or low-rank delta,
    sometimes with an odd dtype or shape, rarely with arbitrary names."""
    dtype = DTYPES[0] if not sometimes(draw) else draw(st.sampled_from(DTYPES))
    dims = st.integers(1, 6) if not rarely(draw) else st.integers(0, 6)
    if draw(st.booleans()):
        shape = draw(st.lists(dims, min_size=1, max_size=2)) if not rarely(draw) else draw(st.lists(dims, max_size=3))
        out = {f"{PARAM}:delta": (dtype, shape)}
    else:
        r, n_in, n_out = draw(dims), draw(dims), draw(dims)
        b_rank = r if not rarely(draw) else draw(dims)
        out = {f"{PARAM}:A": (dtype, [r, n_in]), f"{PARAM}:B": (draw(st.sampled_from([dtype, *DTYPES])) if rarely(draw)
                                                                 else dtype, [n_out, b_rank])}
    for name in draw(st.lists(tensor_names, max_size=2)) if rarely(draw) else []:
        out[name] = (draw(st.sampled_from(DTYPES)), draw(st.lists(st.integers(0, 4), max_size=2)))
    return out


plausible_metadata = st.fixed_dictionaries({}, optional={
    "model": st.text(max_size=8), "method": st.sampled_from(["full", "lora"]), "num_layers": st.integers(0, 40),
    "loss": st.lists(st.none() | st.floats(-10, 10), max_size=3), "retention": st.none() | st.floats(0, 1),
    "steps": st.integers(0, 100), "policy": st.text(max_size=8), "other": json_values})


@st.composite
def safetensors_files(draw) -> bytes:
    """A safetensors file built from fuzzed parts, well-formed in most respects so the
    reader gets past the container to the checkpoint rules: offsets consistent or not,
    data long enough or not, metadata of any JSON shape."""
    header: dict = {}
    offset = 0
    for name, (dtype, shape) in draw(layouts()).items():
        size = math.prod(shape) * DTYPE_SIZE.get(dtype, 1)
        offsets = [offset, offset + size] if not rarely(draw) else draw(st.lists(st.integers(-2, 200), max_size=3))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        offset += size
    if not rarely(draw):
        metadata = {"format": FORMAT if not rarely(draw) else draw(st.sampled_from(["stance-studio/9", "x"]))}
        for key in draw(st.lists(st.sampled_from(["stance", "base", "training", "extraction", "metrics", "name", "created"]),
                                 max_size=7, unique=True)):
            value = draw(plausible_metadata) if not sometimes(draw) else draw(json_values | st.dictionaries(
                st.sampled_from(["model", "loss", "retention", "num_layers", "seconds", "method"]), json_values))
            metadata[key] = json.dumps(value) if not rarely(draw) else draw(st.text(max_size=20))
        header["__metadata__"] = metadata if not rarely(draw) else draw(json_values)
    raw = json.dumps(header).encode()
    if rarely(draw):
        raw += b" " * draw(st.integers(0, 7))
    data = draw(st.binary(max_size=offset + 8)) if rarely(draw) else draw(st.binary(min_size=offset, max_size=offset))
    length = len(raw) if not rarely(draw) else draw(st.integers(0, 2**63))
    return struct.pack("<Q", length) + raw + data


def _read(tmp_path, data: bytes, suffix=".stance.safetensors"):
    path = tmp_path / f"f{next(_counter)}{suffix}"
    path.write_bytes(data)
    try:
        read_header(path)
    except StanceStudioError:
        pass
    try:
        ckpt = load_checkpoint(path)
    except StanceStudioError:
        return path
    for delta in ckpt.deltas.values():  # what loads can be applied: float, non-empty, the shape it says
        dense = delta.materialize()
        assert dense.is_floating_point() and dense.numel() > 0 and tuple(dense.shape) == tuple(delta.shape)
    return path


@FUZZ
@given(data=safetensors_files())
def test_checkpoint_reader_gives_a_checkpoint_or_its_own_error(tmp_path, data):
    _read(tmp_path, data)


@FUZZ
@given(data=st.binary(max_size=200))
def test_checkpoint_reader_on_random_bytes(tmp_path, data):
    _read(tmp_path, data)


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    from stance_studio.core.checkpoints import make_checkpoint, save_checkpoint
    from stance_studio.core.tiny import tiny_base
    from tests.conftest import make_deltas

    base = tiny_base()
    path = tmp_path_factory.mktemp("valid") / "v.stance.safetensors"
    save_checkpoint(make_checkpoint("v", make_deltas(base, rank=2, kinds=("q_proj",)), base), path)
    return path.read_bytes()


@settings(FUZZ, max_examples=100)
@given(cuts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
       truncate=st.one_of(st.none(), st.integers(0, 10**6)))
def test_a_damaged_checkpoint_is_its_own_error_and_never_hides_the_others(tmp_path, valid_file, cuts, truncate):
    data = bytearray(valid_file)
    for position, value in cuts:
        data[position % len(data)] = value
    if truncate is not None:
        data = data[: truncate % (len(data) + 1)]
    folder = tmp_path / f"lib{next(_counter)}"
    folder.mkdir()
    (folder / "good.stance.safetensors").write_bytes(valid_file)
    _read(folder, bytes(data))
    entries, problems = Library(folder).scan()
    assert "good" in [e.name for e in entries]
    assert len(entries) + len(problems) == 2


examples = st.one_of(
    st.fixed_dictionaries({"prompt": json_values, "response": json_values}),
    st.fixed_dictionaries({"prompt": st.text(max_size=30), "response": st.text(max_size=30)},
                          optional={"system": st.one_of(st.none(), st.text(max_size=10))}),
    st.fixed_dictionaries({"messages": st.one_of(json_values, st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool", ""]), "content": json_values | st.text(max_size=20)}),
        max_size=5))}),
    json_values,
)
lines = st.one_of(examples.map(json.dumps), st.text(max_size=40), st.just("[" * 5000))


@pytest.fixture(scope="module")
def tokenizer():
    from stance_studio.core.tiny import tiny_base

    return tiny_base().tokenizer


@FUZZ
@given(rows=st.lists(lines, max_size=6), separator=st.sampled_from(["\n", "\r\n"]), raw=st.binary(max_size=30))
def test_dataset_parser_gives_a_dataset_or_its_own_error(tmp_path, tokenizer, rows, separator, raw):
    path = tmp_path / f"d{next(_counter)}.jsonl"
    path.write_bytes(separator.join(rows).encode("utf-8", "surrogatepass") + (raw if rows and rows[0] == "" else b""))
    try:
        dataset = load_dataset(path, tokenizer, 4096)
    except StanceStudioError:
        return
    assert len(dataset) >= 1
    for example in dataset.examples:
        ids, labels = encode_example(tokenizer, example)
        assert len(ids) == len(labels)


weights = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**400, 10**400).map(str),
                    st.sampled_from(["1e309", "-1e309", "1e308", "nan", "inf", ".5", "5.", "1e", "+-1", "0x10", ""]))
spec_terms = st.one_of(st.text(max_size=12), st.tuples(st.text(max_size=8), weights).map(lambda t: f"{t[0]}={t[1]}"))


@FUZZ
@given(terms=st.lists(spec_terms, min_size=1, max_size=4), joiner=st.sampled_from([",", ", ", ",,", "="]))
def test_blend_spec_parser_gives_a_variant_or_its_own_error(terms, joiner):
    spec = joiner.join(terms)
    try:
        variant = parse_variant(spec)
    except VariantSpecError:
        return
    for name, alpha in variant.weights:
        assert name.strip() and name.lower() != "base"
        assert math.isfinite(alpha) and abs(alpha) <= MAX_WEIGHT
