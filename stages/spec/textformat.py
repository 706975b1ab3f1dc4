"""A lossless model of the protobuf *text format* used by TAO experiment specs.

Written by hand on purpose: ``google.protobuf.text_format`` parses into messages and throws away
comments, field order, blank lines and layout, and needs the compiled schema. We must write an
untouched spec back byte for byte and change nothing but the values we substitute, for any spec,
with no schema. So the tree keeps the source text and records, for every field and value, where it
sits in that text; edits replace exactly those spans and nothing else.

This module imports nothing else of the project.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union


class SpecSyntaxError(ValueError):
    """Malformed spec text. Names the source, line, column and what was expected."""

    def __init__(self, source: str, line: int, column: int, message: str):
        self.source, self.line, self.column, self.reason = source, line, column, message
        super().__init__(f"{source}:{line}:{column}: {message}")


class SpecPathError(ValueError):
    """A field path that is malformed, ambiguous, or absent from the spec."""


# --------------------------------------------------------------------------- tree

@dataclass(eq=False)
class Scalar:
    """A scalar value. ``start``/``end`` span all of its tokens (adjacent strings included)."""

    kind: str  # "string" | "number" | "identifier"
    value: str  # decoded text for strings, the token itself otherwise
    start: int
    end: int
    quote: str = ""  # quote character of the first string part


@dataclass(eq=False)
class Message:
    fields: list["Field"] = field(default_factory=list)
    start: int = 0  # offset of the opening delimiter (0 for the root)
    end: int = 0  # offset just past the closing delimiter (len(text) for the root)


Value = Union[Scalar, Message]


@dataclass(eq=False)
class Field:
    name: str
    start: int  # offset of the field name
    values: list[Value]  # one value, or the elements of a `name: [a, b]` list


@dataclass(frozen=True)
class Match:
    """A value found by a field path, with its concrete path (indices filled in) and line."""

    path: str
    value: Value
    line: int


# --------------------------------------------------------------------------- tokens

_WS_OR_COMMENT = re.compile(r"(?:[ \t\r\n\f\v]+|#[^\n]*)+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Greedy like protobuf's own tokenizer, then checked against _NUMBER, so `1.2.3` is one bad token.
_NUMBER_WORD = re.compile(r"-?(?:[0-9]|\.[0-9])[0-9A-Za-z_.+-]*")
_NUMBER = re.compile(
    r"-?(?:0[xX][0-9A-Fa-f]+|0[0-7]*|[1-9][0-9]*|"
    r"(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?)\Z"
)
_SIGNED_WORDS = {"inf", "infinity", "nan", "inff", "infinityf", "nanf"}
_PUNCT = set("{}<>:[],;./")
_SIMPLE_ESCAPES = {
    "a": b"\a", "b": b"\b", "f": b"\f", "n": b"\n", "r": b"\r", "t": b"\t", "v": b"\v",
    "\\": b"\\", "?": b"?", "'": b"'", '"': b'"',
}


@dataclass
class _Token:
    kind: str  # "ident" | "number" | "string" | "punct" | "eof"
    text: str
    start: int
    end: int
    value: str = ""  # decoded content of a string token


class _Lexer:
    def __init__(self, text: str, source: str, locate):
        self.text, self.source, self.locate = text, source, locate
        self.pos = 0

    def error(self, offset: int, message: str) -> SpecSyntaxError:
        line, col = self.locate(offset)
        return SpecSyntaxError(self.source, line, col, message)

    def tokens(self) -> Iterator[_Token]:
        text, n = self.text, len(self.text)
        while True:
            m = _WS_OR_COMMENT.match(text, self.pos)
            if m:
                self.pos = m.end()
            if self.pos >= n:
                yield _Token("eof", "", n, n)
                return
            start, ch = self.pos, text[self.pos]
            if ch in "\"'":
                yield self._string(start, ch)
                continue
            m = _NUMBER_WORD.match(text, start)
            if m:
                word = m.group()
                if not _NUMBER.match(word):
                    raise self.error(start, f"malformed number {word!r}")
                self.pos = m.end()
                yield _Token("number", word, start, m.end())
                continue
            if ch == "-":
                m = _IDENT.match(text, start + 1)
                if m and m.group().lower() in _SIGNED_WORDS:
                    self.pos = m.end()
                    yield _Token("number", text[start:m.end()], start, m.end())
                    continue
                raise self.error(start, "expected a number after '-'")
            m = _IDENT.match(text, start)
            if m:
                self.pos = m.end()
                yield _Token("ident", m.group(), start, m.end())
                continue
            if ch in _PUNCT:
                self.pos = start + 1
                yield _Token("punct", ch, start, start + 1)
                continue
            raise self.error(start, f"unexpected character {ch!r}")

    def _string(self, start: int, quote: str) -> _Token:
        text, i, out = self.text, start + 1, bytearray()
        while True:
            if i >= len(text) or text[i] == "\n":
                raise self.error(start, f"unterminated string (missing closing {quote})")
            ch = text[i]
            if ch == quote:
                break
            if ch != "\\":
                out += ch.encode("utf-8", "surrogatepass")
                i += 1
                continue
            i = self._escape(i, out)
        self.pos = i + 1
        value = bytes(out).decode("utf-8", "backslashreplace")
        return _Token("string", text[start:i + 1], start, i + 1, value)

    def _escape(self, i: int, out: bytearray) -> int:
        """Decode the escape at text[i] == '\\' into out; return the offset after it."""
        text = self.text
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[nxt]
            return i + 2
        m = re.compile(r"[0-7]{1,3}").match(text, i + 1)
        if m:
            out.append(int(m.group(), 8) & 0xFF)
            return m.end()
        if nxt == "x":
            m = re.compile(r"[0-9A-Fa-f]{1,2}").match(text, i + 2)
            if m:
                out.append(int(m.group(), 16))
                return m.end()
        for letter, width in (("u", 4), ("U", 8)):
            if nxt == letter:
                digits = text[i + 2:i + 2 + width]
                if len(digits) == width and re.fullmatch(r"[0-9A-Fa-f]+", digits):
                    code = int(digits, 16)
                    if code <= 0x10FFFF:
                        out += chr(code).encode("utf-8", "surrogatepass")
                        return i + 2 + width
        raise self.error(i, f"invalid escape sequence {text[i:i + 2]!r} in string")


# --------------------------------------------------------------------------- parser

class _Parser:
    def __init__(self, text: str, source: str, locate):
        self.lexer = _Lexer(text, source, locate)
        self.stream = self.lexer.tokens()
        self.tok = next(self.stream)

    def advance(self) -> _Token:
        tok, self.tok = self.tok, next(self.stream)
        return tok

    def expected(self, what: str) -> SpecSyntaxError:
        found = "end of file" if self.tok.kind == "eof" else repr(self.tok.text)
        return self.lexer.error(self.tok.start, f"expected {what}, found {found}")

    def at(self, *punct: str) -> bool:
        return self.tok.kind == "punct" and self.tok.text in punct

    def parse_root(self) -> Message:
        root = Message()
        self.fields_until(root, None)
        root.end = len(self.lexer.text)
        return root

    def fields_until(self, msg: Message, closer: str | None, opener: _Token | None = None) -> None:
        while True:
            if closer is None and self.tok.kind == "eof":
                return
            if closer is not None and self.at(closer):
                msg.end = self.advance().end
                return
            if self.tok.kind == "eof" or (closer is not None and self.at("}", ">")):
                line, _ = self.lexer.locate(opener.start)
                raise self.expected(f"{closer!r} to close the message opened at line {line}")
            msg.fields.append(self.parse_field())

    def parse_field(self) -> Field:
        start = self.tok.start
        name = self.parse_name()
        has_colon = self.at(":")
        if has_colon:
            self.advance()
        if self.at("{", "<"):
            values: list[Value] = [self.parse_message()]
        elif not has_colon:
            raise self.expected(f"':' or '{{' after field name {name!r}")
        elif self.at("["):
            values = self.parse_list(name)
        else:
            values = [self.parse_scalar(name)]
        if self.at(",", ";"):
            self.advance()
        return Field(name, start, values)

    def parse_name(self) -> str:
        if self.tok.kind == "ident":
            return self.advance().text
        if self.at("["):  # extension or Any type name: [pkg.ext] or [type.googleapis.com/pkg.Msg]
            self.advance()
            parts = []
            while True:
                if self.tok.kind != "ident":
                    raise self.expected("an extension name inside '[...]'")
                parts.append(self.advance().text)
                if self.at(".", "/"):
                    parts.append(self.advance().text)
                    continue
                if self.at("]"):
                    self.advance()
                    return "[" + "".join(parts) + "]"
                raise self.expected("'.' or ']' in extension name")
        raise self.expected("a field name")

    def parse_message(self) -> Message:
        opener = self.advance()
        msg = Message(start=opener.start)
        self.fields_until(msg, "}" if opener.text == "{" else ">", opener)
        return msg

    def parse_list(self, name: str) -> list[Value]:
        self.advance()
        values: list[Value] = []
        if self.at("]"):
            self.advance()
            return values
        while True:
            values.append(self.parse_message() if self.at("{", "<") else self.parse_scalar(name))
            if self.at(","):
                self.advance()
                continue
            if self.at("]"):
                self.advance()
                return values
            raise self.expected(f"',' or ']' in the list of {name!r}")

    def parse_scalar(self, name: str) -> Scalar:
        tok = self.tok
        if tok.kind == "string":
            first = self.advance()
            parts, end = [first.value], first.end
            while self.tok.kind == "string":  # adjacent literals concatenate, as in C
                nxt = self.advance()
                parts.append(nxt.value)
                end = nxt.end
            return Scalar("string", "".join(parts), first.start, end, first.text[0])
        if tok.kind in ("number", "ident"):
            self.advance()
            return Scalar("number" if tok.kind == "number" else "identifier", tok.text, tok.start, tok.end)
        raise self.expected(f"a value for field {name!r}")


# --------------------------------------------------------------------------- field paths

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+|\*)\])?\Z")


def parse_field_path(path: str) -> list[tuple[str, int | str | None]]:
    """`a.b[0].c[*]` -> [("a", None), ("b", 0), ("c", "*")]."""
    if not path:
        raise SpecPathError("empty field path")
    segments = []
    for part in path.split("."):
        m = _SEGMENT.match(part)
        if not m:
            raise SpecPathError(
                f"malformed field path {path!r}: segment {part!r} is not NAME, NAME[INDEX] or NAME[*]"
            )
        index = m.group(2)
        segments.append((m.group(1), None if index is None else index if index == "*" else int(index)))
    return segments


def _occurrences(msg: Message, name: str) -> list[Value]:
    return [v for f in msg.fields if f.name == name for v in f.values]


# --------------------------------------------------------------------------- spec

class Spec:
    """A parsed spec: its exact source text plus the tree that points into it."""

    def __init__(self, text: str, source: str = "<spec>"):
        self.text, self.source = text, source
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.root = _Parser(text, source, self.locate).parse_root()

    @classmethod
    def load(cls, path: str | Path) -> "Spec":
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FileNotFoundError(f"cannot read spec {path}: {exc.strerror or exc}") from exc
        return cls.from_bytes(data, str(path))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<spec>") -> "Spec":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            raise SpecSyntaxError(source, line, column, "the spec is not valid UTF-8") from None
        return cls(text, source)

    def dumps(self) -> str:
        return self.text

    def write(self, path: str | Path) -> None:
        Path(path).write_bytes(self.text.encode("utf-8", "surrogatepass"))

    def locate(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of an offset."""
        index = bisect.bisect_right(self._line_starts, offset) - 1
        return index + 1, offset - self._line_starts[index] + 1

    def line_of(self, value: Value | Field) -> int:
        return self.locate(value.start)[0]

    def find(self, path: str, *, strict: bool = True) -> list[Match]:
        """Values addressed by a field path.

        `name` must occur at most once, `name[i]` picks the i-th occurrence (list elements count as
        occurrences, as in protobuf), `name[*]` takes all. With ``strict``, a path that reaches
        nothing raises SpecPathError naming the missing segment; otherwise it yields no match.
        """
        segments = parse_field_path(path)
        found: list[tuple[str, Value]] = [("", self.root)]
        for depth, (name, index) in enumerate(segments):
            nxt: list[tuple[str, Value]] = []
            for prefix, node in found:
                if not isinstance(node, Message):
                    if strict:
                        raise SpecPathError(f"{self.source}: {prefix!r} is a value, not a message; "
                                            f"it has no field {name!r} (in field path {path!r})")
                    continue
                values = _occurrences(node, name)
                here = f"{prefix}.{name}" if prefix else name
                if index is None:
                    if len(values) > 1:
                        raise SpecPathError(
                            f"{self.source}: field {here!r} occurs {len(values)} times; "
                            f"write {here}[0]..{here}[{len(values) - 1}] or {here}[*] (in field path {path!r})")
                    nxt += [(here, v) for v in values]
                elif index == "*":
                    nxt += [(f"{here}[{i}]", v) for i, v in enumerate(values)]
                elif index < len(values):
                    nxt.append((f"{here}[{index}]", values[index]))
            if not nxt:
                if strict:
                    raise SpecPathError(self._absent(path, segments[: depth + 1], found))
                return []
            found = nxt
        return [Match(p, v, self.line_of(v)) for p, v in found]

    def _absent(self, path: str, reached: list, parents: list[tuple[str, Value]]) -> str:
        name, index = reached[-1]
        where = parents[0][0] or "the top level"
        known = sorted({f.name for _, node in parents if isinstance(node, Message) for f in node.fields})
        what = f"field {name!r}" if index in (None, "*") else f"occurrence [{index}] of field {name!r}"
        hint = f" (it has: {', '.join(known)})" if known else ""
        return f"field path {path!r} does not exist in {self.source}: {where} has no {what}{hint}"

    def replaced(self, edits: dict[Scalar, str]) -> "Spec":
        """A new Spec whose text has each scalar's source span replaced by the given literal."""
        text = self.text
        for scalar in sorted(edits, key=lambda s: s.start, reverse=True):
            text = text[: scalar.start] + edits[scalar] + text[scalar.end:]
        return Spec(text, self.source)


# --------------------------------------------------------------------------- literals

def quote_string(value: str, quote: str = '"') -> str:
    """A text-format string literal for value; non-ASCII stays as UTF-8, as TAO's specs do."""
    out = [quote]
    for ch in value:
        if ch == "\\" or ch == quote:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    out.append(quote)
    return "".join(out)


def literal_for(scalar: Scalar, new_value: str) -> str:
    """The source text that gives ``scalar`` the new value, keeping its kind and quote style."""
    if scalar.kind == "string":
        return quote_string(new_value, scalar.quote or '"')
    word = new_value.strip()
    if scalar.kind == "number":
        ok = bool(_NUMBER.match(word)) or word.lstrip("-").lower() in _SIGNED_WORDS
        if not ok:
            raise SpecPathError(f"{new_value!r} is not a number, and the field holds a number")
        return word
    if not (_IDENT.fullmatch(word) or _NUMBER.match(word)):
        raise SpecPathError(f"{new_value!r} is not an identifier (enum or true/false) or a number")
    return word
