"""Perl data read as data: the subset that `.stats` dumps are written in. Pure; nothing is run.

Upstream's readers string-evaluate a `.stats` file (spec §10.4), so a name
with a quote in it runs code (spec §15). This parser only recognises
literals and builds Python values from them; anything else — a variable, a
function call, an interpolating string, `bless`, a reference — is an error
that names its line.

The subset (perlop "Quote and Quote-like Operators", perldata):
- single-quoted strings with Perl's rules: `\\\\` is a backslash, `\\'` a
  quote, every other backslash is itself;
- double-quoted strings without interpolation (`$` and `@` only escaped),
  with the escapes Data::Dumper writes (`\\n \\t \\r \\f \\a \\e \\0`, octal,
  `\\xHH`, `\\x{H...}`, `\\\\ \\" \\$ \\@`);
- integers and floats (sign, fraction, exponent) -> int / float;
- `undef` -> None, `[ ... ]` -> list, `{ ... }` -> dict (keys are strings;
  a bareword or number before `=>` is a key), `=>` and `,` between items,
  trailing commas, `#` comments;
- around the value, the wrappers dumps use: `{ my $dump = VALUE; }`
  (ncebpf and upstream, spec §10.3), `my $VAR1 = VALUE;` and
  `$VAR1 = VALUE;` (Data::Dumper, the coalescer's composite, spec §11.8),
  or the bare value.
Nesting is bounded (MAX_DEPTH), so a hostile file cannot exhaust the stack.
"""

from __future__ import annotations

import re

MAX_DEPTH = 32  # a dump nests 3 deep: the table, a peer, its names

_TOKEN = re.compile(r"""
    (?P<sq>'(?:[^'\\]|\\.)*')
  | (?P<dq>"(?:[^"\\]|\\.)*")
  | (?P<num>-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])
  | (?P<arrow>=>)
  | (?P<punct>[\[\]{},;=])
  | (?P<word>[A-Za-z_]\w*)
  | (?P<var>\$[A-Za-z_]\w*)
""", re.VERBOSE | re.DOTALL)
_SPACE = re.compile(r"(?:\s+|#[^\n]*)*")
_SINGLE_ESCAPE = re.compile(r"\\([\\'])")
_DOUBLE_ESCAPE = re.compile(r"\\(x\{([0-9A-Fa-f]*)\}|x([0-9A-Fa-f]{0,2})|([0-7]{1,3})|(.))",
                            re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "a": "\a", "e": "\x1b",
                   "\\": "\\", '"': '"', "$": "$", "@": "@"}
_INTEGER = re.compile(r"-?\d+")

PerlValue = str | int | float | None | list["PerlValue"] | dict[str, "PerlValue"]


class PerlDataError(ValueError):
    """The text is not in the subset: line (1-based, in the whole text) and what was expected."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def single_quoted(body: str) -> str:
    """The value of a single-quoted Perl string, given what is between the quotes."""
    return _SINGLE_ESCAPE.sub(r"\1", body) if "\\" in body else body


def parse(text: str, offset: int = 0) -> PerlValue:
    """The value text[offset:] holds, inside one of the wrappers above or bare.

    Raises PerlDataError naming the line of the first thing outside the subset.
    """
    return _Parser(text, offset).document()


class _Parser:
    def __init__(self, text: str, offset: int) -> None:
        self.text = text
        self.pos = offset

    # -- tokens ---------------------------------------------------------------------------

    def line(self, pos: int | None = None) -> int:
        return self.text.count("\n", 0, self.pos if pos is None else pos) + 1

    def fail(self, message: str, pos: int | None = None) -> PerlDataError:
        return PerlDataError(self.line(pos), message)

    def peek(self) -> tuple[str, str, int]:
        """(kind, text, start) of the next token; kind "end" at the end of the text."""
        space = _SPACE.match(self.text, self.pos)
        start = space.end() if space else self.pos
        if start >= len(self.text):
            return "end", "", start
        token = _TOKEN.match(self.text, start)
        if token is None:
            char = self.text[start]
            if char in "'\"":
                raise self.fail(f"a string opened with {char} is never closed", start)
            raise self.fail(f"unexpected {_show(self.text[start:start + 20])}", start)
        kind = token.lastgroup or ""
        return kind, token.group(), start

    def take(self) -> tuple[str, str, int]:
        kind, value, start = self.peek()
        self.pos = start + len(value)
        return kind, value, start

    def expect(self, wanted: str, context: str) -> None:
        kind, value, start = self.take()
        if value != wanted or kind in ("sq", "dq"):
            raise self.fail(f"expected '{wanted}' {context}, found {_found(kind, value)}", start)

    # -- grammar --------------------------------------------------------------------------

    def document(self) -> PerlValue:
        kind, value, start = self.peek()
        if value == "{" and kind == "punct":
            saved = self.pos
            self.take()
            if self.peek()[1] == "my":  # { my $dump = {...}; }
                self.take()
                value_ = self.assignment()
                self.expect("}", "closing the block")
                return self.finish(value_)
            self.pos = saved
        elif value == "my" and kind == "word":
            self.take()
            return self.finish(self.assignment())
        elif kind == "var":
            return self.finish(self.assignment())
        elif kind == "end":
            raise self.fail("expected a Perl value, found the end of the file", start)
        elif kind == "word" and value != "undef":
            raise self.fail(f"expected '{{ my $dump = {{' or '$VAR1 = {{', found {_show(value)}",
                            start)
        return self.finish(self.value(0))

    def assignment(self) -> PerlValue:
        kind, value, start = self.take()
        if kind != "var":
            raise self.fail(f"expected a variable such as $VAR1, found {_found(kind, value)}",
                            start)
        self.expect("=", f"after {value}")
        result = self.value(0)
        self.expect(";", "after the value")
        return result

    def finish(self, result: PerlValue) -> PerlValue:
        kind, value, start = self.peek()
        if kind != "end":
            raise self.fail(f"expected the end of the file, found {_found(kind, value)}", start)
        return result

    def value(self, depth: int) -> PerlValue:
        kind, text, start = self.take()
        if kind == "sq":
            return single_quoted(text[1:-1])
        if kind == "dq":
            return self.double_quoted(text[1:-1], start)
        if kind == "num":
            return int(text) if _INTEGER.fullmatch(text) else float(text)
        if kind == "word" and text == "undef":
            return None
        if kind == "punct" and text in "[{":
            if depth >= MAX_DEPTH:
                raise self.fail(f"nested deeper than {MAX_DEPTH} levels", start)
            return self.array(depth + 1) if text == "[" else self.hash(depth + 1)
        raise self.fail(f"expected a string, a number, undef, [ or {{, found "
                        f"{_found(kind, text)} (only data is read, nothing is run)", start)

    def array(self, depth: int) -> list[PerlValue]:
        items: list[PerlValue] = []
        while True:
            kind, text, _ = self.peek()
            if kind == "punct" and text == "]":
                self.take()
                return items
            items.append(self.value(depth))
            kind, text, start = self.take()
            if kind == "punct" and text == "]":
                return items
            if not (kind == "arrow" or (kind == "punct" and text == ",")):
                raise self.fail(f"expected ',' or ']' after a list item, found "
                                f"{_found(kind, text)}", start)

    def hash(self, depth: int) -> dict[str, PerlValue]:
        items: dict[str, PerlValue] = {}
        while True:
            kind, text, start = self.take()
            if kind == "punct" and text == "}":
                return items
            if kind == "sq":
                key = single_quoted(text[1:-1])
            elif kind == "dq":
                key = self.double_quoted(text[1:-1], start)
            elif kind in ("word", "num") and self.peek()[0] == "arrow":
                key = text
            else:
                raise self.fail(f"expected a hash key or '}}', found {_found(kind, text)}", start)
            kind, text, start = self.take()
            if not (kind == "arrow" or (kind == "punct" and text == ",")):
                raise self.fail(f"expected '=>' after the hash key, found {_found(kind, text)}",
                                start)
            items[key] = self.value(depth)
            kind, text, start = self.take()
            if kind == "punct" and text == "}":
                return items
            if not (kind == "punct" and text == ","):
                raise self.fail(f"expected ',' or '}}' after a hash value, found "
                                f"{_found(kind, text)}", start)

    def double_quoted(self, body: str, start: int) -> str:
        bare = _DOUBLE_ESCAPE.sub("", body)
        if "$" in bare or "@" in bare:
            raise self.fail("a double-quoted string with $ or @ interpolates: not read "
                            "(only data is read, nothing is run)", start)

        def unescape(match: re.Match[str]) -> str:
            braced, hex2, octal, other = match.group(2, 3, 4, 5)
            if braced is not None:
                return chr(int(braced or "0", 16))
            if hex2 is not None:
                return chr(int(hex2 or "0", 16))
            if octal is not None:
                return chr(int(octal, 8))
            if other in _SIMPLE_ESCAPES:
                return _SIMPLE_ESCAPES[other]
            raise self.fail(f"the escape \\{other} in a double-quoted string is not read",
                            start)

        try:
            value = _DOUBLE_ESCAPE.sub(unescape, body)
        except (ValueError, OverflowError) as err:  # \x{...} beyond Unicode
            if isinstance(err, PerlDataError):
                raise
            raise self.fail("a \\x{...} escape beyond Unicode", start) from None
        return _bytes_as_utf8(value)


def _bytes_as_utf8(value: str) -> str:
    """A string of byte escapes that spell UTF-8 (Data::Dumper's Useqq writes the bytes of a
    Perl byte string: "\\303\\274"), as the text it spells; any other string as it is."""
    if value.isascii() or max(value) > "\xff":
        return value
    try:
        return value.encode("latin-1").decode()
    except UnicodeDecodeError:
        return value


def _found(kind: str, text: str) -> str:
    if kind == "end":
        return "the end of the file"
    return _show(text)


def _show(text: str) -> str:
    text = text.split("\n", 1)[0]
    # ascii(): a damaged file's bytes shown as escapes, never sent raw to a terminal.
    return ascii(text[:20] + ("..." if len(text) > 20 else ""))
