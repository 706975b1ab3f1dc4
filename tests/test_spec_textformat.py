"""The spec model: lossless round trip, every text-format construct, field paths, precise errors."""
from __future__ import annotations

import pytest

from stages.spec import Spec, SpecPathError, SpecSyntaxError

EVERY_CONSTRUCT = (
    b"# leading comment\r\n"
    b"random_seed: 42  # trailing comment\n"
    b"\n"
    b"dataset_config {\n"
    b"  data_sources: {   # a colon before the brace is legal\n"
    b"    tfrecords_path: '/workspace/data/tfrecords/*' ;\n"
    b"    image_directory_path: \"/workspace/\" \"data\" '/training'\n"
    b"  }\n"
    b"  data_sources < image_directory_path: \"/workspace/data/val\" >\n"
    b"}\n"
    b"numbers { a: 1e-07 b: 9.99999974738e-05 c: -inf d: 0x1F e: -12 f: .5 g: 1.0f h: nan i: 017 }\n"
    b"enums { algo: DBSCAN flag: true mode: INTEGRATE }\n"
    b"escapes: \"tab\\t quote\\\" back\\\\ oct\\101 hex\\x42 uni\\u00e9 \xc3\xbc\"\n"
    b"tags: [\"a\", 'b', \"c\"]\n"
    b"objs: [{ x: 1 }, < x: 2 >]\n"
    b"empty {}\n"
    b"[com.example.ext] { y: 3 }\n"
    b"last: 1,"  # no final newline
)


def test_every_construct_round_trips_byte_for_byte():
    assert Spec.from_bytes(EVERY_CONSTRUCT).dumps().encode() == EVERY_CONSTRUCT


def test_shared_spec_round_trips_byte_for_byte(shared_spec):
    data = shared_spec.read_bytes()
    assert Spec.from_bytes(data, str(shared_spec)).dumps().encode() == data


def test_adjacent_strings_concatenate_across_quote_styles():
    spec = Spec.from_bytes(EVERY_CONSTRUCT)
    [match] = spec.find("dataset_config.data_sources[0].image_directory_path")
    assert match.value.value == "/workspace/data/training"


def test_escapes_decode_like_protobuf():
    [match] = Spec.from_bytes(EVERY_CONSTRUCT).find("escapes")
    assert match.value.value == 'tab\t quote" back\\ octA hexB unié ü'


@pytest.mark.parametrize("field, token", [
    ("a", "1e-07"), ("b", "9.99999974738e-05"), ("c", "-inf"), ("d", "0x1F"), ("e", "-12"),
    ("f", ".5"), ("g", "1.0f"), ("h", "nan"),
])
def test_numbers_in_every_form_are_numbers(field, token):
    [match] = Spec.from_bytes(EVERY_CONSTRUCT).find(f"numbers.{field}")
    assert (match.value.kind, match.value.value) == ("number" if token != "nan" else "identifier", token)


def test_enum_identifiers_are_identifiers():
    [match] = Spec.from_bytes(EVERY_CONSTRUCT).find("enums.algo")
    assert (match.value.kind, match.value.value) == ("identifier", "DBSCAN")


def test_angle_brackets_delimit_messages():
    [match] = Spec.from_bytes(EVERY_CONSTRUCT).find("dataset_config.data_sources[1].image_directory_path")
    assert match.value.value == "/workspace/data/val"


def test_list_elements_are_occurrences_of_a_repeated_field():
    values = [m.value.value for m in Spec.from_bytes(EVERY_CONSTRUCT).find("tags[*]")]
    assert values == ["a", "b", "c"]


def test_wildcard_paths_report_concrete_indices_and_lines():
    matches = Spec.from_bytes(EVERY_CONSTRUCT).find("dataset_config.data_sources[*].image_directory_path")
    assert [(m.path, m.line) for m in matches] == [
        ("dataset_config.data_sources[0].image_directory_path", 7),
        ("dataset_config.data_sources[1].image_directory_path", 9),
    ]


def test_unindexed_repeated_field_is_ambiguous():
    with pytest.raises(SpecPathError, match=r"occurs 2 times.*data_sources\[\*\]"):
        Spec.from_bytes(EVERY_CONSTRUCT).find("dataset_config.data_sources.image_directory_path")


def test_missing_field_path_names_the_missing_segment_and_the_alternatives():
    spec = Spec("training_config { batch_size_per_gpu: 4 num_epochs: 1 }", "train.txt")
    with pytest.raises(SpecPathError) as err:
        spec.find("training_config.batch_size")
    assert "train.txt" in str(err.value)
    assert "no field 'batch_size'" in str(err.value)
    assert "batch_size_per_gpu, num_epochs" in str(err.value)


def test_index_past_the_last_occurrence_is_missing():
    with pytest.raises(SpecPathError, match=r"no occurrence \[5\]"):
        Spec.from_bytes(EVERY_CONSTRUCT).find("dataset_config.data_sources[5]")


def test_malformed_field_path_is_rejected():
    with pytest.raises(SpecPathError, match="malformed field path"):
        Spec("a: 1").find("a..b")


@pytest.mark.parametrize("text, line, column, expected", [
    ("a {\n  b: 1\n  c: }\n}", 3, 6, "expected a value for field 'c', found '}'"),
    ("a {\n  b: 1\n", 3, 1, "expected '}' to close the message opened at line 1, found end of file"),
    ("a: 1\n}\n", 2, 1, "expected a field name, found '}'"),
    ("a 1", 1, 3, "expected ':' or '{' after field name 'a', found '1'"),
    ('a: "abc\nb: 1', 1, 4, 'unterminated string (missing closing ")'),
    (r'a: "bad \q escape"', 1, 9, r"invalid escape sequence '\\q'"),
    ("a: 1.2.3", 1, 4, "malformed number '1.2.3'"),
    ("a: [1, 2", 1, 9, "expected ',' or ']' in the list of 'a', found end of file"),
    ("a: 1 $", 1, 6, "unexpected character '$'"),
    ("a < b: 1 }", 1, 10, "expected '>' to close"),
])
def test_malformed_input_names_file_line_column_and_expectation(text, line, column, expected):
    with pytest.raises(SpecSyntaxError) as err:
        Spec(text, "bad.txt")
    assert (err.value.source, err.value.line, err.value.column) == ("bad.txt", line, column)
    assert expected in str(err.value)
    assert str(err.value).startswith(f"bad.txt:{line}:{column}: ")


def test_invalid_utf8_is_a_syntax_error_with_its_position():
    with pytest.raises(SpecSyntaxError) as err:
        Spec.from_bytes(b'a: 1\nb: "\xff"\n', "latin.txt")
    assert (err.value.line, err.value.column) == (2, 5)


def test_replaced_changes_only_the_edited_span():
    spec = Spec.from_bytes(EVERY_CONSTRUCT)
    [match] = spec.find("random_seed")
    edited = spec.replaced({match.value: "7"})
    assert edited.dumps() == spec.dumps().replace("random_seed: 42", "random_seed: 7", 1)
