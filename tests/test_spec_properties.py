"""Property-based tests of the spec model (hypothesis)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.spec import Spec, SpecPathError, SpecSyntaxError, path_values, quote_string, substitute

NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
NUMBERS = st.sampled_from(["0", "42", "-7", "1e-07", "9.99999974738e-05", "-inf", "inf", "nan",
                           "0x1F", ".5", "3.", "1.0f", "017", "-0.25E+3"])
IDENTS = st.sampled_from(["DBSCAN", "true", "false", "INTEGRATE", "L1"])
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
GAP = st.sampled_from(["", " ", "  ", "\n", "\n\n  ", "\t", "\r\n", " # note: { } \" '\n", "\n# c\n"])


@st.composite
def string_literal(draw):
    parts = draw(st.lists(TEXT, min_size=1, max_size=3))
    quote = draw(st.sampled_from(['"', "'"]))
    glue = draw(GAP.filter(lambda g: "#" not in g))
    return glue.join(quote_string(p, quote) for p in parts), "".join(parts)


def fields(depth):
    scalar = st.one_of(NUMBERS, IDENTS, string_literal().map(lambda lit: lit[0]))
    value_field = st.tuples(NAMES, GAP, scalar).map(lambda t: f"{t[0]}:{t[1]}{t[2]}")
    list_field = st.tuples(NAMES, st.lists(scalar, max_size=3)).map(lambda t: f"{t[0]}: [{', '.join(t[1])}]")
    if depth == 0:
        return st.one_of(value_field, list_field)
    message = st.tuples(NAMES, st.sampled_from([" ", ": ", ":"]), st.sampled_from(["{}", "<>"]),
                        st.lists(fields(depth - 1), max_size=4), GAP)
    message_field = message.map(lambda t: f"{t[0]}{t[1]}{t[2][0]}{t[4]}{(t[4] or ' ').join(t[3])}{t[4]}{t[2][1]}")
    return st.one_of(value_field, list_field, message_field)


@st.composite
def spec_text(draw):
    items = draw(st.lists(fields(2), max_size=5))
    separator = st.sampled_from(["\n", " ", ";\n", ",", "\n\n# x\n"])
    seps = draw(st.lists(separator, min_size=len(items), max_size=len(items)))
    return draw(GAP) + "".join(item + sep for item, sep in zip(items, seps)) + draw(GAP)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(spec_text())
def test_write_of_parse_is_identity(text):
    assert Spec(text).dumps() == text


@given(NAMES, string_literal())
def test_parsed_strings_decode_to_what_was_written(name, literal):
    source, value = literal
    [match] = Spec(f"{name}: {source}").find(name)
    assert match.value.value == value


@given(TEXT)
def test_strings_decode_as_protobuf_decodes_them(value):
    from google.protobuf import text_format
    proto = pytest.importorskip("nvidia_tao_deploy.cv.detectnet_v2.proto.model_config_pb2")
    text = f"pretrained_model_file: {quote_string(value)}"
    message = text_format.Merge(text, proto.ModelConfig())
    [match] = Spec(text).find("pretrained_model_file")
    assert match.value.value == message.pretrained_model_file == value


COMPONENT = st.from_regex(r"[A-Za-z0-9 _.%&#'\"ü-]{1,6}", fullmatch=True).filter(lambda c: c not in (".", ".."))


@given(st.lists(COMPONENT, min_size=1, max_size=4), st.lists(COMPONENT, min_size=1, max_size=3),
       st.lists(st.lists(COMPONENT, min_size=1, max_size=3), min_size=1, max_size=3))
def test_substitution_is_idempotent_when_references_and_targets_do_not_overlap(tail, target, refs):
    value = "/workspace/" + "/".join(tail)
    mapping = {"/workspace/" + "/".join(r): "/real/" + "/".join(target) for r in refs}
    mapping["/workspace"] = "/real/root"
    spec = Spec(f"dataset_config {{ data_sources {{ image_directory_path: {quote_string(value)} }} }}")
    once, _ = substitute(spec, mapping)
    twice, rewrites = substitute(once, mapping)
    assert twice.dumps() == once.dumps()
    assert rewrites == []
    assert path_values(once)[0].value.startswith("/real/")


GARBAGE = st.sampled_from(list("ab_:{}<>[],;.-#'\"\\ \n\t0x1e9f") + ["inf", "é", "\\x"])


@settings(max_examples=500)
@given(st.lists(GARBAGE, max_size=40).map("".join))
def test_garbage_text_is_a_tree_or_a_syntax_error(text):
    try:
        spec = Spec(text)
    except SpecSyntaxError as exc:
        assert exc.line >= 1 and exc.column >= 1
        return
    assert spec.dumps() == text


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_garbage_bytes_are_a_tree_or_a_syntax_error(data):
    try:
        Spec.from_bytes(data)
    except SpecSyntaxError:
        pass


@given(st.text(max_size=30))
def test_any_field_path_is_found_or_a_path_error(path):
    spec = Spec("a { b: 1 b: 2 c { d: 'x' } }")
    try:
        spec.find(path)
    except SpecPathError:
        pass
