"""The Go ``text/template`` subset Prometheus uses for alert labels and annotations.

Prometheus expands every label and annotation of an alerting rule with Go's
text/template (option ``missingkey=zero``, the function map of its
``template/template.go``) after prepending ``{{$labels := .Labels}}
{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}
{{$value := .Value}}``.  This module re-implements that language: a tokenizer
(:func:`_lex`), a recursive-descent parser to a small AST (:class:`_Parser`), an
evaluator (:class:`_Exec`) and Go's ``fmt`` rules for printing values, so that
output matches ``promtool`` 2.42 (see tests/unit/rules/test_template.py).

Not supported: ``define``/``template``/``block`` and complex constants (parse
errors, where Go accepts them); methods on values; the functions that need a
PromQL engine (``query first label value strvalue sortByLabel``) and the builtins
``call``, ``slice`` and ``js``, which parse but fail when executed; in printf,
the ``#`` flag on floats, ``%b`` of a float and a precision on ``%x`` of a float.
Regular expressions run on Python's ``re`` (with ``re.ASCII``), not RE2: the
common syntax agrees, error messages and exotic syntax (``\\pL``, ``[[:alpha:]]``,
flags in mid-pattern) do not.  A label with an empty value does not exist, as
in Prometheus.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import ipaddress
import math
import re
import urllib.parse
from collections import namedtuple
from dataclasses import dataclass, field

__all__ = ["Template", "TemplateError", "expand", "parse"]


class TemplateError(ValueError):
    """A template that does not parse, or that fails while it executes.

    ``line`` and ``column`` (1-based, counted in characters) locate the problem in
    the template text; the message starts with them: ``template:1:4: ...``.
    """

    def __init__(self, msg: str, line: int = 0, column: int = 0):
        super().__init__(f"template:{line}:{column}: {msg}")
        self.line, self.column = line, column
        self.message = msg


class _GoError(Exception):
    """An error returned by a template function (becomes "error calling NAME: ...")."""


def _error(src: str, pos: int, msg: str) -> TemplateError:
    line = src.count("\n", 0, pos) + 1
    return TemplateError(msg, line, pos - src.rfind("\n", 0, pos))


# ----------------------------------------------------------------------------- lexer

_SPACE = " \t\r\n"
_Tok = namedtuple("_Tok", "kind val pos end sp")  # sp: white space came before it
_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "define",
             "template", "block", "nil", "true", "false"}
_NUM = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]*(?:\.[0-9a-fA-F_]*)?(?:[pP][+-]?[0-9_]*)?"
                  r"|0[oO][0-7_]*(?:\.[0-7_]*)?|0[bB][01_]*(?:\.[01_]*)?"
                  r"|[0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9_]*)?)i?")
_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdecimal()


def _right_delim(src: str, p: int) -> tuple[int | None, bool]:
    """(end, trim) when ``}}`` or `` -}}`` starts at ``p``, else (None, False)."""
    if src[p:p + 1] in tuple(_SPACE) and src.startswith("-}}", p + 1):
        return p + 4, True
    return (p + 2, False) if src.startswith("}}", p) else (None, False)


def _lex(src: str) -> list[_Tok]:
    """Split ``src`` into text and action tokens; apply trim markers, drop comments."""
    toks, pos, n = [], 0, len(src)
    while True:
        i = src.find("{{", pos)
        if i < 0:
            if pos < n:
                toks.append(_Tok("text", src[pos:], pos, n, False))
            toks.append(_Tok("eof", None, n, n, True))
            return toks
        ltrim = src.startswith("-", i + 2) and src[i + 3:i + 4] in tuple(_SPACE)
        text = src[pos:i].rstrip(_SPACE) if ltrim else src[pos:i]
        if text:
            toks.append(_Tok("text", text, pos, i, False))
        p = i + (4 if ltrim else 2)
        if src.startswith("/*", p):
            close = src.find("*/", p + 2)
            if close < 0:
                raise _error(src, i, "unclosed comment")
            pos, rtrim = _right_delim(src, close + 2)
            if pos is None:
                raise _error(src, i, "comment ends before closing delimiter")
        else:
            toks.append(_Tok("{{", None, i, p, False))
            pos, rtrim = _lex_action(src, p, toks)
        while rtrim and pos < n and src[pos] in _SPACE:
            pos += 1


def _lex_action(src: str, p: int, toks: list) -> tuple[int, bool]:
    """Append the tokens of the action starting at ``p``; return (end, trim)."""
    n, depth, sp = len(src), 0, True
    while True:
        end, trim = _right_delim(src, p)
        if end is not None:
            if depth:
                raise _error(src, p, "unclosed left paren")
            toks.append(_Tok("}}", None, p, end, sp))
            return end, trim
        if p >= n:
            raise _error(src, p, "unclosed action")
        c, start = src[p], p
        if c in _SPACE:
            p, sp = p + 1, True
            continue
        if c in "()|=,":
            depth += (c == "(") - (c == ")")
            if depth < 0:
                raise _error(src, p, "unexpected right paren")
            kind, val, p = c, c, p + 1
        elif c == ":":
            if not src.startswith(":=", p):
                raise _error(src, p, "expected :=")
            kind, val, p = ":=", ":=", p + 2
        elif c in "\"'":
            q = p + 1
            while q < n and src[q] not in (c, "\n"):
                q += 2 if src[q] == "\\" and src[q + 1:q + 2] not in ("", "\n") else 1
            if src[q:q + 1] != c:
                raise _error(src, p, "unterminated quoted string" if c == '"'
                             else "unterminated character constant")
            kind, val, p = "str", _unquote(src[p + 1:q], c), q + 1
            if val is None:
                raise _error(src, start, "invalid syntax")
            if c == "'":
                if len(val) != 1:
                    raise _error(src, start, f"malformed character constant: {src[start:p]}")
                kind, val = "num", ord(val)
        elif c == "`":
            q = src.find("`", p + 1)
            if q < 0:
                raise _error(src, p, "unterminated raw quoted string")
            kind, val, p = "str", src[p + 1:q].replace("\r", ""), q + 1
        elif c == "$" or (c == "." and not src[p + 1:p + 2].isdecimal()):
            q = p + 1
            while q < n and _is_alnum(src[q]):
                q += 1
            _check_terminator(src, q)
            kind = "var" if c == "$" else ("field" if q > p + 1 else "dot")
            val, p = src[p:q] if c == "$" else src[p + 1:q], q
        elif c in "+-.0123456789":
            q = _NUM.match(src, p).end()
            if q < n and _is_alnum(src[q]):
                raise _error(src, p, f"bad number syntax: {_go_quote(src[p:q + 1])}")
            kind, val, p = "num", _number(src, p, src[p:q]), q
        elif _is_alnum(c):
            q = p
            while q < n and _is_alnum(src[q]):
                q += 1
            _check_terminator(src, q)
            val, p = src[p:q], q
            kind = val if val in _KEYWORDS else "ident"
        elif c.isascii() and c.isprintable():
            kind, val, p = "char", c, p + 1
        else:
            raise _error(src, p, f"unrecognized character in action: U+{ord(c):04X}")
        toks.append(_Tok(kind, val, start, p, sp))
        sp = False


def _check_terminator(src: str, q: int) -> None:
    """Go requires a field, variable or identifier to end at one of these characters."""
    if q < len(src) and src[q] not in _SPACE + ".,|:()" and not src.startswith("}}", q):
        raise _error(src, q, f"bad character U+{ord(src[q]):04X} '{src[q]}'")


def _unquote(body: str, quote: str) -> str | None:
    """Decode the escapes of a Go quoted string or rune literal; None when invalid."""
    out, i = bytearray(), 0
    while i < len(body):
        c, e = body[i], body[i + 1:i + 2]
        if c != "\\":
            out += c.encode()
            i += 1
        elif e in _ESC or e == quote:
            out += _ESC.get(e, e).encode()
            i += 2
        elif e in ("x", "u", "U"):
            w = {"x": 2, "u": 4, "U": 8}[e]
            h = body[i + 2:i + 2 + w]
            if len(h) != w or not re.fullmatch(r"[0-9a-fA-F]+", h):
                return None
            v = int(h, 16)
            if e == "x":
                out.append(v)
            elif v > 0x10FFFF or 0xD800 <= v < 0xE000:
                return None
            else:
                out += chr(v).encode()
            i += 2 + w
        elif re.fullmatch(r"[0-3][0-7][0-7]", body[i + 1:i + 4]):
            out.append(int(body[i + 1:i + 4], 8))
            i += 4
        else:
            return None
    return out.decode("utf-8", "replace")


def _number(src: str, pos: int, text: str) -> int | float:
    """The value of a Go number literal: an int, else a float64."""
    if text.endswith("i"):
        raise _error(src, pos, "complex numbers are not supported")
    body = text.lstrip("+-")
    try:
        v = int(body[1:], 8) if re.fullmatch(r"0[0-7_]+", body) else int(body, 0)
    except ValueError:
        v = None
    if v is not None:
        if not -2**63 <= v < 2**63:
            raise _error(src, pos, f"integer overflow: {_go_quote(text)}")
        return -v if text[0] == "-" else v
    try:
        return _parse_float(text)
    except ValueError:
        raise _error(src, pos, f"illegal number syntax: {_go_quote(text)}") from None


_FLOAT = re.compile(r"[+-]?(?:inf(?:inity)?|(?:[0-9_]+\.?[0-9_]*|\.[0-9_]+)(?:e[+-]?[0-9_]+)?"
                    r"|0x(?:[0-9a-f_]+\.?[0-9a-f_]*|\.[0-9a-f_]+)p[+-]?[0-9_]+)|nan", re.IGNORECASE)


def _parse_float(s: str) -> float:
    """Go's strconv.ParseFloat(s, 64); ValueError("invalid syntax"/"value out of range")."""
    if not _FLOAT.fullmatch(s):
        raise ValueError("invalid syntax")
    try:
        f = float.fromhex(s.replace("_", "")) if "x" in s.lower() else float(s)
    except OverflowError:
        raise ValueError("value out of range") from None
    except ValueError:
        raise ValueError("invalid syntax") from None
    if math.isinf(f) and "n" not in s.lower():
        raise ValueError("value out of range")
    return f


# ---------------------------------------------------------------------------- parser

@dataclass
class _Pipe:
    pos: int
    end: int
    decl: list            # names of the variables declared/assigned
    assign: bool          # "=" rather than ":="
    cmds: list            # of _Cmd


@dataclass
class _Cmd:
    pos: int
    end: int
    args: list            # operands: _Lit, _Field, _Func or _Pipe


@dataclass
class _Lit:
    pos: int
    end: int
    kind: str             # bool, num, str, nil or dot
    value: object = None


@dataclass
class _Field:
    pos: int
    base: object          # None: .a.b on dot; "$x": $x.a.b; a _Func/_Pipe: (...).a.b
    names: list


@dataclass
class _Func:
    pos: int
    name: str


@dataclass
class _Control:
    kind: str             # action, if, with, range, break or continue
    pos: int
    pipe: _Pipe | None = None
    body: list = field(default_factory=list)   # nodes; a str node is literal text
    alt: list | None = None                    # the {{else}} part


_OPERAND = {"true", "false", "num", "str", "dot", "field", "ident", "nil", "var", "("}
_PREDEFINED = ("$labels", "$externalLabels", "$externalURL", "$value")


class _Parser:
    """Recursive-descent parser from tokens to a list of nodes, with Go's checks."""

    def __init__(self, src: str):
        self.src, self.toks, self.i = src, _lex(src), 0
        self.vars, self.range_depth = ["$", *_PREDEFINED], 0

    def fail(self, tok, msg):
        raise _error(self.src, tok.pos, msg)

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        self.i += 1
        return self.toks[self.i - 1]

    def describe(self, tok) -> str:
        if tok.kind == "eof":
            return "EOF"
        text = self.src[tok.pos:tok.end]
        return f"<{text}>" if tok.kind in _KEYWORDS or tok.kind == "dot" else _go_quote(text)

    def expect(self, kind, context):
        tok = self.next()
        if tok.kind != kind:
            self.fail(tok, f"unexpected {self.describe(tok)} in {context}")

    def parse(self) -> list:
        nodes, stop = self.item_list()
        if stop.kind != "eof":
            self.fail(stop, f"unexpected {{{{{stop.kind}}}}}")
        return nodes

    def item_list(self) -> tuple[list, _Tok]:
        """Nodes up to EOF or an {{end}}/{{else}}, whose keyword is consumed and returned."""
        nodes = []
        while True:
            tok = self.next()
            if tok.kind == "eof":
                return nodes, tok
            if tok.kind == "text":
                nodes.append(tok.val)
                continue
            kw = self.peek()
            if kw.kind in ("end", "else"):
                return nodes, self.next()
            nodes.append(self.action())

    def action(self):
        tok = self.peek()
        if tok.kind in ("if", "with", "range"):
            return self.control(self.next())
        if tok.kind in ("break", "continue"):
            self.next()
            if not self.range_depth:
                self.fail(tok, f"{{{{{tok.kind}}}}} outside {{{{range}}}}")
            self.expect("}}", f"{{{{{tok.kind}}}}}")
            return _Control(tok.kind, tok.pos)
        if tok.kind in ("define", "template", "block"):
            self.fail(tok, f"{{{{{tok.kind}}}}} is not supported")
        return _Control("action", tok.pos, self.pipeline("command", "}}"))

    def control(self, kw):
        mark = len(self.vars)
        pipe = self.pipeline(kw.kind, "}}")
        self.range_depth += kw.kind == "range"
        body, stop = self.item_list()
        self.range_depth -= kw.kind == "range"
        alt = None
        if stop.kind == "else":
            if kw.kind == "if" and self.peek().kind == "if":
                alt = [self.control(self.next())]     # {{else if}}: shares our {{end}}
            else:
                if self.peek().kind == "if":   # Go 1.19 allows {{else if}} only in {{if}}
                    self.fail(self.peek(), "unexpected <if> in input")
                self.expect("}}", "else")
                alt, stop = self.item_list()
                if stop.kind == "else":
                    self.fail(stop, "expected end; found {{else}}")
        if stop.kind == "eof":
            self.fail(stop, "unexpected EOF")
        if stop.kind == "end":
            self.expect("}}", "end")
        del self.vars[mark:]
        return _Control(kw.kind, kw.pos, pipe, body, alt)

    def pipeline(self, context, end) -> _Pipe:
        """[declarations] command ('|' command)* up to ``end`` ('}}' or ')'), consumed."""
        start, decl, assign = self.peek(), [], False
        while self.peek().kind == "var" and self.toks[self.i + 1].kind in (":=", "=", ","):
            var, op = self.next(), self.next()
            decl.append(var.val)
            self.vars.append(var.val)
            if op.kind != ",":
                assign = op.kind == "="
                break
            if context == "range" and len(decl) < 2:
                if self.peek().kind in ("var", "}}", ")"):
                    continue
                self.fail(op, "range can only initialize variables")
            self.fail(op, f"too many declarations in {context}")
        cmds = []
        while True:
            tok = self.peek()
            if tok.kind == end:
                self.next()
                if not cmds:
                    self.fail(tok, f"missing value for {context}")
                for stage, cmd in enumerate(cmds[1:], 2):
                    if isinstance(cmd.args[0], _Lit):
                        self.fail(cmd, f"non executable command in pipeline stage {stage}")
                return _Pipe(start.pos, tok.pos, decl, assign, cmds)
            if tok.kind not in _OPERAND:
                self.fail(tok, f"unexpected {self.describe(tok)} in {context}")
            cmds.append(self.command())

    def command(self) -> _Cmd:
        """Space-separated operands up to '|' (consumed), '}}' or ')'."""
        pos, args = self.peek().pos, []
        while True:
            args.append(self.operand())
            tok = self.peek()
            if tok.kind in ("}}", ")", "|"):
                if tok.kind == "|":
                    self.next()
                return _Cmd(pos, tok.pos, args)
            if tok.kind not in _OPERAND or not tok.sp:
                self.fail(tok, f"unexpected {self.describe(tok)} in operand")

    def operand(self):
        """A term, possibly followed by .Field accesses."""
        node = self.term()
        names = []
        while self.peek().kind == "field" and not self.peek().sp:
            names.append(self.next().val)
        if not names:
            return node
        if isinstance(node, _Lit):
            self.fail(node, f"unexpected . after term {_go_quote(self.src[node.pos:node.end])}")
        if isinstance(node, _Field):
            node.names += names
            return node
        return _Field(node.pos, node, names)

    def term(self):
        tok = self.next()
        if tok.kind == "ident":
            if tok.val not in _FUNCS:
                self.fail(tok, f"function {_go_quote(tok.val)} not defined")
            return _Func(tok.pos, tok.val)
        if tok.kind == "var":
            if tok.val not in self.vars:
                self.fail(tok, f"undefined variable {_go_quote(tok.val)}")
            return _Field(tok.pos, tok.val, [])
        if tok.kind == "field":
            return _Field(tok.pos, None, [tok.val])
        if tok.kind == "(":
            return self.pipeline("parenthesized pipeline", ")")
        if tok.kind in ("true", "false"):
            return _Lit(tok.pos, tok.end, "bool", tok.kind == "true")
        return _Lit(tok.pos, tok.end, tok.kind, None if tok.kind == "nil" else tok.val)


# ------------------------------------------------------------------------- evaluator

class _HTML(str):
    """html/template.HTML, what safeHtml returns: a string of another Go type."""
    GO_TYPE = "template.HTML"


class _AnyMap(dict):
    """map[string]interface{} (from ``args``): a missing key reads as nil."""
    GO_TYPE = "map[string]interface {}"


class _Time:
    """A *time.Time in UTC at millisecond precision (toTime, humanizeTimestamp)."""
    GO_TYPE = "*time.Time"

    def __init__(self, ms: int):
        self.ms = ms

    def __str__(self) -> str:
        t = datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=self.ms)
        frac = f".{self.ms % 1000:03d}".rstrip("0").rstrip(".")
        return f"{t:%Y-%m-%d %H:%M:%S}{frac} +0000 UTC"


class _Data:
    """The struct Prometheus passes as dot."""
    FIELDS = ("Labels", "ExternalLabels", "ExternalURL", "Value")
    GO_TYPE = ("struct { Labels map[string]string; ExternalLabels map[string]string; "
               "ExternalURL string; Value float64 }")

    def __init__(self, labels, external_labels, external_url, value):
        self.Labels, self.ExternalLabels = labels, external_labels
        self.ExternalURL, self.Value = external_url, value


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_MISSING = object()   # "no value piped in" (Go's missingVal)


def _type(v) -> str:
    """Go's type name for a value, as %T prints it."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    return getattr(v, "GO_TYPE", "string" if isinstance(v, str) else "map[string]string")


def _kind(v) -> str | None:
    """Go's basic kind for comparisons (None: not a basic kind)."""
    for t, k in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(v, t):
            return k
    return None


def _truth(v) -> bool:
    return v is not None and (bool(v) if isinstance(v, (bool, int, float, str, dict)) else True)


class _Exec:
    """Executes a parsed template; ``vars`` is Go's stack of (name, value)."""

    def __init__(self, src: str, data: _Data):
        self.src, self.data, self.out, self.at = src, data, [], None
        self.vars = [("$", data), ("$labels", data.Labels), ("$externalLabels", data.ExternalLabels),
                     ("$externalURL", data.ExternalURL), ("$value", data.Value)]

    def fail(self, msg, node=None):
        node = node or self.at
        text = self.src[node.pos:node.end].strip() if hasattr(node, "end") else ""
        raise _error(self.src, node.pos, f"executing at <{text}>: {msg}")

    def walk(self, nodes, dot):
        for node in nodes:
            if isinstance(node, str):
                self.out.append(node)
            elif node.kind == "action":
                val = self.pipe(node.pipe, dot)
                if not node.pipe.decl:
                    self.out.append("<no value>" if val is None else _fmt_v(val))
            elif node.kind in ("if", "with"):
                mark = len(self.vars)
                val = self.pipe(node.pipe, dot)
                if _truth(val):
                    self.walk(node.body, val if node.kind == "with" else dot)
                elif node.alt is not None:
                    self.walk(node.alt, dot)
                del self.vars[mark:]
            elif node.kind == "range":
                self.range(node, dot)
            else:
                raise _Break if node.kind == "break" else _Continue

    def range(self, node, dot):
        mark = len(self.vars)
        val, pipe = self.pipe(node.pipe, dot), node.pipe
        if val is not None and not isinstance(val, dict):
            self.fail(f"range can't iterate over {_fmt_v(val)}", pipe.cmds[-1])
        items = sorted((val or {}).items(), key=lambda kv: kv[0])
        for key, elem in items:
            inner = len(self.vars)
            if pipe.decl and pipe.assign:
                self.set_var(pipe.decl[0], key if len(pipe.decl) > 1 else elem)
                if len(pipe.decl) > 1:
                    self.set_var(pipe.decl[1], elem)
            elif pipe.decl:   # := pushed the variables: the last is the element
                self.vars[-1] = (self.vars[-1][0], elem)
                if len(pipe.decl) > 1:
                    self.vars[-2] = (self.vars[-2][0], key)
            try:
                self.walk(node.body, elem)
            except _Continue:
                pass
            except _Break:
                break
            finally:
                del self.vars[inner:]
        if not items and node.alt is not None:
            self.walk(node.alt, dot)
        del self.vars[mark:]

    def pipe(self, pipe: _Pipe, dot):
        val = _MISSING
        for cmd in pipe.cmds:
            val = self.command(cmd, dot, val)
        for name in pipe.decl:
            if pipe.assign:
                self.set_var(name, val)
            else:
                self.vars.append((name, val))
        return val

    def var(self, name):
        for n, v in reversed(self.vars):
            if n == name:
                return v
        self.fail(f"undefined variable: {name}")

    def set_var(self, name, val):
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, val)
                return
        self.fail(f"undefined variable: {name}")

    def command(self, cmd: _Cmd, dot, final):
        self.at = cmd
        first = cmd.args[0]
        if isinstance(first, _Func):
            return self.call(first.name, dot, cmd.args[1:], final)
        if isinstance(first, _Field) and (first.names or len(cmd.args) == 1 and final is _MISSING):
            return self.field(first, dot, len(cmd.args) > 1 or final is not _MISSING)
        if len(cmd.args) > 1 or final is not _MISSING:
            name = first.base if isinstance(first, _Field) else self.src[first.pos:first.end].strip()
            self.fail(f"can't give argument to non-function {name}")
        if isinstance(first, _Pipe):
            return self.pipe(first, dot)
        if first.kind == "nil":
            self.fail("nil is not a command")
        return dot if first.kind == "dot" else first.value

    def field(self, node: _Field, dot, has_args=False):
        """Evaluate .a.b, $x.a.b or (pipe).a.b; ``has_args`` is for the last name."""
        if node.base is None:
            recv = dot
        elif isinstance(node.base, str):
            recv = self.var(node.base)
        else:
            recv = self.value(node.base, dot)
        for i, name in enumerate(node.names):
            args = has_args and i == len(node.names) - 1
            if recv is None:
                return None
            if isinstance(recv, _Data) and name in _Data.FIELDS:
                if args:
                    self.fail(f"{name} has arguments but cannot be invoked as function")
                recv = getattr(recv, name)
            elif isinstance(recv, dict):
                if args:
                    self.fail(f"{name} is not a method but has arguments")
                recv = recv.get(name, None if isinstance(recv, _AnyMap) else "")
            else:
                self.fail(f"can't evaluate field {name} in type {_type(recv)}")
        return recv

    def value(self, node, dot):
        """The value of an operand used as an argument."""
        if isinstance(node, _Field):
            return self.field(node, dot)
        if isinstance(node, _Func):
            return self.call(node.name, dot, [], _MISSING)
        if isinstance(node, _Pipe):
            return self.pipe(node, dot)
        return dot if node.kind == "dot" else node.value

    def arg(self, node, dot, want):
        """Evaluate an argument for a parameter of type ``want`` ("str" or "any")."""
        if isinstance(node, _Lit) and node.kind != "dot" and want == "str":
            if node.kind == "nil":
                self.fail("cannot assign nil to string")
            if node.kind != "str":
                self.fail(f"expected string; found {self.src[node.pos:node.end]}")
        return self.check(self.value(node, dot), want)

    def check(self, val, want):
        if want == "str" and type(val) is not str:
            self.fail("invalid value; expected string" if val is None
                      else f"wrong type for value; expected string; got {_type(val)}")
        return val

    def call(self, name, dot, args, final):
        fn, params, variadic, at = *_FUNCS[name], self.at
        n = len(args) + (final is not _MISSING)
        if n != len(params) if variadic is None else n < len(params):
            least = "" if variadic is None else "at least "
            self.fail(f"wrong number of args for {name}: want {least}{len(params)} got {n}")
        if name in ("and", "or"):   # short-circuit, returning the deciding operand
            val = None
            for node in args:
                val = self.arg(node, dot, "any")
                if _truth(val) == (name == "or"):
                    return val
            return val if final is _MISSING else final
        types = params + [variadic] * (n - len(params))
        vals = [self.arg(node, dot, t) for node, t in zip(args, types)]
        if final is not _MISSING:
            vals.append(self.check(final, types[-1]))
        self.at = at
        if name in ("externalURL", "pathPrefix"):
            return self.data.ExternalURL if name == "externalURL" else \
                urllib.parse.urlsplit(self.data.ExternalURL).path
        if fn is None:
            self.fail(f"function {name} is not supported")
        try:
            return fn(*vals)
        except (_GoError, ValueError, ArithmeticError) as e:
            self.fail(f"error calling {name}: {e}")


# ------------------------------------------------------------------ Go fmt formatting

_QESC = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _go_quote(s: str, q: str = '"', ascii_only: bool = False) -> str:
    """strconv.Quote (or QuoteRune with q="'"; QuoteToASCII with ascii_only)."""
    out = [q]
    for ch in s:
        o = ord(ch)
        if ch in (q, "\\"):
            out.append("\\" + ch)
        elif ch in _QESC:
            out.append(_QESC[ch])
        elif ch.isprintable() and not (ascii_only and o > 126):
            out.append(ch)
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out) + q


def _format_float(v: float, verb: str, prec: int | None) -> str:
    """strconv.FormatFloat(v, verb, prec, 64); prec None: shortest repr (%v, %g)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if prec is not None:
        return f"%.{prec}{verb}" % v
    if v == 0:
        return "-0" if math.copysign(1, v) < 0 else "0"
    _, dig, e = decimal.Decimal(repr(abs(v))).as_tuple()
    point, digits = len(dig) + e, "".join(map(str, dig)).rstrip("0")
    sign, x = "-" if v < 0 else "", len(dig) + e - 1
    if x < -4 or x >= 6:   # Go switches to exponent form at 1e+06 for shortest %g
        m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{m}{'e' if verb == 'g' else 'E'}{'-' if x < 0 else '+'}{abs(x):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _hex_float(v: float, upper: bool) -> str:
    """%x of a float64: 0x1.8p+00."""
    if not math.isfinite(v) or v == 0:
        s = _format_float(v, "g", None) if v != 0 else ("-" if math.copysign(1, v) < 0 else "") + "0x0p+00"
    else:
        m, _, e = float.hex(v).partition("p")
        m = m.rstrip("0").rstrip(".")
        s = f"{m}p{'-' if e[0] == '-' else '+'}{abs(int(e)):02d}"
    return s.upper().replace("INF", "Inf").replace("NAN", "NaN") if upper else s


def _fmt_v(v) -> str:
    """fmt's %v."""
    return _fmt_arg(v, "v")


def _pad(s: str, width, flags: str) -> str:
    """Pad to ``width`` runes: right with "-", else left with zeros ("0") or spaces."""
    if width is None or len(s) >= width:
        return s
    if "-" in flags:
        return s + " " * (width - len(s))
    return ("0" if "0" in flags else " ") * (width - len(s)) + s


def _fmt_arg(a, verb: str, flags: str = "", width=None, prec=None) -> str:
    """Format one Printf operand the way Go's fmt does for its type and verb."""
    if verb == "T":
        return _pad(_type(a), width, flags)
    if a is None:
        return _pad("<nil>", width, flags) if verb == "v" else f"%!{verb}(<nil>)"
    if isinstance(a, (dict, _Data)):
        items = sorted(a.items()) if isinstance(a, dict) else [(None, getattr(a, f)) for f in a.FIELDS]
        if "V" in flags and isinstance(a, dict):   # %#v: Go syntax
            return _type(a) + "{" + ", ".join(f"{_fmt_arg(k, verb, flags)}:{_fmt_arg(x, verb, flags)}"
                                              for k, x in items) + "}"
        parts = [("" if k is None else _fmt_arg(k, verb, flags, width, prec) + ":")
                 + _fmt_arg(x, verb, flags, width, prec) for k, x in items]
        return ("map[%s]" if isinstance(a, dict) else "{%s}") % " ".join(parts)
    if isinstance(a, _Time):
        a = str(a)   # a fmt.Stringer
    if isinstance(a, bool):
        s = _pad(str(a).lower(), width, flags) if verb in "tv" else None
    elif isinstance(a, int):
        s = _fmt_int(a, verb, flags, width, prec)
    elif isinstance(a, float):
        s = _fmt_float(a, verb, flags, width, prec)
    else:
        s = _fmt_str(a, verb, flags, width, prec)
    return f"%!{verb}({_type(a)}={_fmt_arg(a, 'v', flags, width, prec)})" if s is None else s


def _fmt_str(a: str, verb: str, flags: str, width, prec) -> str | None:
    if verb in "xX":
        b = a.encode()[:prec]
        px = "0" + verb if "#" in flags else ""
        hx = [px + format(c, "02" + verb) for c in b]
        return _pad(" ".join(hx) if " " in flags else px + "".join(h[len(px):] for h in hx), width, flags)
    if verb not in "vsq":
        return None
    a = a[:prec]
    if verb == "q" or "V" in flags:
        a = f"`{a}`" if "#" in flags and verb == "q" and "`" not in a and a.isprintable() \
            else _go_quote(a, '"', "+" in flags)
    return _pad(a, width, flags)


def _fmt_int(v: int, verb: str, flags: str, width, prec) -> str | None:
    ch = chr(v) if 0 <= v <= 0x10FFFF and not 0xD800 <= v < 0xE000 else "\ufffd"
    if verb in "cqU":
        s = {"c": ch, "q": _go_quote(ch, "'", "+" in flags), "U": f"U+{v % 2**64:04X}"}[verb]
        return _pad(s + (f" '{ch}'" if verb == "U" and "#" in flags and ch.isprintable() else ""),
                    width, flags)
    base = {"d": "d", "v": "d", "b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}.get(verb)
    if base is None:
        return None
    digits = format(abs(v), base)
    sign = "-" if v < 0 else "+" if "+" in flags else " " if " " in flags else ""
    if prec is not None:
        digits = "" if prec == 0 and v == 0 else digits.zfill(prec)
    elif "0" in flags and "-" not in flags and width is not None:
        digits = digits.zfill(width - len(sign))
    prefix = "0o" if verb == "O" else ""
    if "#" in flags:
        prefix = {"b": "0b", "x": "0x", "X": "0X", "o": "" if digits.startswith("0") else "0"}.get(verb, prefix)
    return _pad(sign + prefix + digits, width, flags.replace("0", ""))


def _fmt_float(v: float, verb: str, flags: str, width, prec) -> str | None:
    verb = "g" if verb == "v" else verb
    if verb not in "eEfFgGxX":
        return None
    if verb in "xX":
        s = _hex_float(v, verb == "X")
    else:
        s = _format_float(v, verb, 6 if prec is None and verb in "eEfF" else prec)
    if s[0] not in "+-":
        s = "+" + s
    if " " in flags and "+" not in flags and s[0] == "+":
        s = " " + s[1:]
    if s[1] in "IN":   # Inf and NaN: no zero padding, NaN unsigned unless asked
        if s[1] == "N" and " " not in flags and "+" not in flags:
            s = s[1:]
        return _pad(s, width, flags.replace("0", ""))
    if "+" not in flags and s[0] == "+":
        s = s[1:]
    if "0" in flags and "-" not in flags and width is not None and width > len(s):
        return s[0] + s[1:].zfill(width - 1) if s[0] in "+- " else s.zfill(width)
    return _pad(s, width, flags)


_VERB = re.compile(r"%([-+# 0]*)(\*|[0-9]+)?(?:\.(\*|[0-9]*))?(?:\[([0-9]+)\])?(.?)", re.DOTALL)


def _sprintf(fmt: str, args) -> str:
    """fmt.Sprintf: flags, width and precision (also ``*``), ``%[n]v``, and Go's
    %!v(BADTYPE=...), %!v(MISSING), %!(EXTRA ...) markers."""
    out, i, ai, reordered = [], 0, 0, False
    while (j := fmt.find("%", i)) >= 0:
        out.append(fmt[i:j])
        flags, width, prec, index, verb = (m := _VERB.match(fmt, j)).groups()
        i = m.end()
        nums = []
        for spec in (width, prec):
            num = int(spec) if spec and spec != "*" else (0 if spec == "" else None)
            if spec == "*":
                if ai < len(args) and type(args[ai]) is int:
                    num = args[ai]
                    if num < 0:
                        num, flags = (-num, flags + "-") if spec is width else (None, flags)
                ai += ai < len(args)
                if num is None:
                    out.append("%!(BADWIDTH)" if spec is width else "%!(BADPREC)")
            nums.append(num)
        if index:
            ai, reordered = int(index) - 1, True
        if verb == "v":   # %+v only matters for structs; %#v (flag "V" here) is Go syntax
            flags = flags.replace("+", "").replace("#", "V")
        if not verb:
            out.append("%!(NOVERB)")
            return "".join(out)
        if verb == "%":
            out.append("%")
        elif index and not 0 <= ai < len(args):
            out.append(f"%!{verb}(BADINDEX)")
        elif ai >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            out.append(_fmt_arg(args[ai], verb, flags, *nums))
            ai += 1
    out.append(fmt[i:])
    if ai < len(args) and not reordered:
        extra = ", ".join("<nil>" if a is None else f"{_type(a)}={_fmt_v(a)}" for a in args[ai:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _sprint(args) -> str:
    """fmt.Sprint: a space between operands when neither is a string."""
    out = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_fmt_v(a))
    return "".join(out)


# ------------------------------------------------------------------------- functions

def _eq(a, *bs) -> bool:
    if not bs:
        raise _GoError("missing argument for comparison")
    for b in bs:
        ka, kb = _kind(a), _kind(b)
        if ka != kb:
            if a is not None and b is not None:
                raise _GoError("incompatible types for comparison")
        elif ka is not None:
            if a == b:
                return True
        elif isinstance(a, dict) or isinstance(b, dict):
            raise _GoError(f"non-comparable type {_fmt_v(a)}: {_type(a)}")
        elif a is b:
            return True
    return False


def _lt(a, b) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka is None or kb is None or ka == kb == "bool":
        raise _GoError("invalid type for comparison")
    if ka != kb:
        raise _GoError("incompatible types for comparison")
    return a < b


def _len(v) -> int:
    if isinstance(v, (str, dict)):
        return len(v.encode()) if isinstance(v, str) else len(v)
    raise _GoError(f"len of type {_type(v)}")


def _index(item, *indexes):
    if item is None:
        raise _GoError("index of untyped nil")
    for i in indexes:
        if isinstance(item, dict):
            if type(i) is not str:
                raise _GoError(f"value has type {_type(i)}; should be string")
            item = item.get(i, None if isinstance(item, _AnyMap) else "")
        elif isinstance(item, str):
            if not isinstance(i, int) or isinstance(i, bool):
                raise _GoError("cannot index slice/array with " + ("nil" if i is None else f"type {_type(i)}"))
            if not 0 <= i < len(item.encode()):
                raise _GoError(f"index out of range: {i}")
            item = item.encode()[i]
        else:
            raise _GoError(f"can't index item of type {_type(item)}")
    return item


def _eval_args(args) -> str:
    return args[0] if len(args) == 1 and type(args[0]) is str else _sprint(args)


def _to_float(v) -> float:
    """convertToFloat from Prometheus' template.go."""
    if isinstance(v, float):
        return v
    if type(v) is str:
        try:
            return _parse_float(v)
        except ValueError as e:
            raise _GoError(f"strconv.ParseFloat: parsing {_go_quote(v)}: {e}") from None
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    raise _GoError(f"can't convert {_type(v)} to float")


def _g4(v: float) -> str:
    return _sprintf("%.4g", [v])


def _scale(v: float, prefixes: str, suffix: str = "") -> str:
    """Multiply by 1000 until |v| >= 1, picking the matching SI prefix."""
    prefix = ""
    for p in prefixes:
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return _g4(v) + prefix + suffix


def _humanize(v) -> str:
    v = _to_float(v)
    if v == 0 or not math.isfinite(v):
        return _g4(v)
    if abs(v) < 1:
        return _scale(v, "munpfazy")
    prefix = ""
    for p in "kMGTPEZY":
        if abs(v) < 1000:
            break
        prefix, v = p, v / 1000
    return _g4(v) + prefix


def _humanize1024(v) -> str:
    v = _to_float(v)
    if abs(v) <= 1 or not math.isfinite(v):
        return _g4(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix, v = p, v / 1024
    return _g4(v) + prefix


def _humanize_duration(v) -> str:
    v = _to_float(v)
    if not math.isfinite(v):
        return _g4(v)
    if v == 0:
        return _g4(v) + "s"
    if abs(v) < 1:
        return _scale(v, "munpfazy", "s")
    sign, v = ("-" if v < 0 else ""), abs(v)
    d = int(v) if v < 2.0**63 else -2**63   # what Go's int64(v) gives on amd64

    def quo(a, b):   # Go's integer division truncates
        return -(-a // b) if a < 0 else a // b
    days, h, m, s = quo(d, 86400), quo(d, 3600) - 24 * quo(d, 86400), quo(d, 60) - 60 * quo(d, 3600), d - 60 * quo(d, 60)
    if days:
        return f"{sign}{days}d {h}h {m}m {s}s"
    if h:
        return f"{sign}{h}h {m}m {s}s"
    if m:
        return f"{sign}{m}m {s}s"
    return f"{sign}{_g4(v)}s"


def _to_time(v) -> _Time:
    v = _to_float(v)
    ts = v * 1e9
    if not math.isfinite(v) or not -2.0**63 <= ts <= 2.0**63:
        if not math.isfinite(v):
            raise _GoError("value is NaN or Inf")
        raise _GoError(f"{_fmt_v(v)} cannot be represented as a nanoseconds timestamp "
                       "since it overflows int64")
    ns = int(ts)
    return _Time(int(abs(ns) // 1_000_000) * (1 if ns >= 0 else -1))


def _humanize_timestamp(v) -> str:
    f = _to_float(v)
    return _g4(f) if not math.isfinite(f) else str(_to_time(f))


def _split_host_port(hp: str):
    """net.SplitHostPort: (host, port), or None where Go returns an error."""
    i = hp.rfind(":")
    if i < 0:
        return None
    if hp.startswith("["):
        end = hp.find("]")
        if end < 0 or end + 1 != i:
            return None
        host, j, k = hp[1:end], 1, end + 1
    else:
        host, j, k = hp[:i], 0, 0
        if ":" in host:
            return None
    if "[" in hp[j:] or "]" in hp[k:]:
        return None
    return host, hp[i + 1:]


def _strip_domain(hp: str) -> str:
    host, port = _split_host_port(hp) or (hp, "")
    try:
        ipaddress.ip_address(host)
        return hp
    except ValueError:
        host = host.split(".")[0]
    if not port:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _case(c: str, how: str) -> str:
    """Go's single-rune unicode.ToUpper/ToLower/ToTitle (no multi-rune mappings)."""
    r = getattr(c, how)()
    if len(r) == 1:
        return r
    if how == "upper" and len(c.title()) == 1:
        return c.title()
    return "i" if c == "\u0130" and how == "lower" else c


def _title(s: str) -> str:
    """strings.Title: upper-case the first letter of each word."""
    out, prev = [], " "
    for c in s:
        if prev.isascii():
            sep = not (prev.isalnum() or prev == "_")
        else:
            sep = not (prev.isalpha() or prev.isdecimal()) and prev.isspace()
        out.append(_case(c, "title") if sep else c)
        prev = c
    return "".join(out)


def _regexp(pattern: str, fn: str) -> re.Pattern:
    """Compile a Go (RE2) pattern with Python's re: \\z and $ mean end of text."""
    py, i = [], 0
    multiline = re.search(r"\(\?[a-zA-Z]*m", pattern) is not None
    in_class = False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            py.append("\\Z" if pattern[i + 1:i + 2] == "z" else pattern[i:i + 2])
            i += 2
            continue
        in_class = (in_class and c != "]") or c == "["
        py.append("\\Z" if c == "$" and not in_class and not multiline else c)
        i += 1
    try:
        return re.compile("".join(py), re.ASCII)
    except re.error as e:
        prefix = f"regexp: Compile(`{pattern}`): " if fn == "reReplaceAll" else ""
        raise _GoError(f"{prefix}error parsing regexp: {e}") from None


_GROUP_REF = re.compile(r"\{(\w+)\}|(\w+)")


def _expand(tmpl: str, m: re.Match) -> str:
    """Regexp.Expand: $1, ${1}, $name, ${name}; $$ is a dollar."""
    out, i = [], 0
    while (j := tmpl.find("$", i)) >= 0:
        out.append(tmpl[i:j])
        ref = _GROUP_REF.match(tmpl, j + 1)
        if tmpl.startswith("$$", j) or not ref:
            out.append("$")
            i = j + (2 if tmpl.startswith("$$", j) else 1)
            continue
        name, i = ref.group(1) or ref.group(2), ref.end()
        if name.isascii() and name.isdigit():
            out.append((m.group(int(name)) if int(name) <= m.re.groups else None) or "")
        else:
            out.append(m.groupdict().get(name) or "")
    return "".join(out) + tmpl[i:]


def _re_replace_all(pattern: str, repl: str, text: str) -> str:
    """Regexp.ReplaceAllString (an empty match right after a match is not replaced)."""
    rx, out, last, pos = _regexp(pattern, "reReplaceAll"), [], 0, 0
    while pos <= len(text) and (m := rx.search(text, pos)):
        out.append(text[last:m.start()])
        if m.end() > last or m.start() == 0:
            out.append(_expand(repl, m))
        last = m.end()
        pos = m.end() if m.end() > pos else pos + 1
    return "".join(out) + text[last:]


_DURATION = re.compile(r"(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?"
                       r"(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?")
_DURATION_MS = (365 * 86400_000, 7 * 86400_000, 86400_000, 3600_000, 60_000, 1000, 1)


def _parse_duration(s: str) -> float:
    """Prometheus' model.ParseDuration, in seconds."""
    if s == "0":
        return 0.0
    if not s:
        raise _GoError("empty duration string")
    m = _DURATION.fullmatch(s)
    if not m:
        raise _GoError(f"not a valid duration string: {_go_quote(s)}")
    ns = sum(int(g) * k for g, k in zip(m.groups(), _DURATION_MS) if g) * 1_000_000
    if ns >= 2**63:
        raise _GoError("duration out of range")
    return float(ns) / 1e9


_HTML_ESC = {'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;", "\0": "\ufffd"}
_A, _S = "any", "str"

# name: (function or None, parameter types, type of further arguments or None)
_FUNCS = {
    # text/template builtins
    "and": (None, [_A], _A), "or": (None, [_A], _A),
    "not": (lambda a: not _truth(a), [_A], None),
    "len": (_len, [_A], None),
    "index": (_index, [_A], _A),
    "print": (lambda *a: _sprint(a), [], _A),
    "println": (lambda *a: " ".join(map(_fmt_v, a)) + "\n", [], _A),
    "printf": (lambda f, *a: _sprintf(f, a), [_S], _A),
    "html": (lambda *a: "".join(_HTML_ESC.get(c, c) for c in _eval_args(a)), [], _A),
    "urlquery": (lambda *a: urllib.parse.quote_plus(_eval_args(a), safe=""), [], _A),
    "eq": (_eq, [_A], _A),
    "ne": (lambda a, b: not _eq(a, b), [_A, _A], None),
    "lt": (_lt, [_A, _A], None),
    "le": (lambda a, b: _lt(a, b) or _eq(a, b), [_A, _A], None),
    "gt": (lambda a, b: not (_lt(a, b) or _eq(a, b)), [_A, _A], None),
    "ge": (lambda a, b: not _lt(a, b), [_A, _A], None),
    "call": (None, [_A], _A), "slice": (None, [_A], _A), "js": (None, [], _A),
    # Prometheus template/template.go
    "humanize": (_humanize, [_A], None),
    "humanize1024": (_humanize1024, [_A], None),
    "humanizeDuration": (_humanize_duration, [_A], None),
    "humanizePercentage": (lambda v: _g4(_to_float(v) * 100) + "%", [_A], None),
    "humanizeTimestamp": (_humanize_timestamp, [_A], None),
    "toTime": (_to_time, [_A], None),
    "toUpper": (lambda s: "".join(_case(c, "upper") for c in s), [_S], None),
    "toLower": (lambda s: "".join(_case(c, "lower") for c in s), [_S], None),
    "title": (_title, [_S], None),
    "match": (lambda p, s: _regexp(p, "match").search(s) is not None, [_S, _S], None),
    "reReplaceAll": (_re_replace_all, [_S, _S, _S], None),
    "safeHtml": (_HTML, [_S], None),
    "stripPort": (lambda hp: (_split_host_port(hp) or (hp,))[0], [_S], None),
    "stripDomain": (_strip_domain, [_S], None),
    "args": (lambda *a: _AnyMap((f"arg{i}", v) for i, v in enumerate(a)), [], _A),
    "graphLink": (lambda e: f"/graph?g0.expr={urllib.parse.quote_plus(e, safe='')}&g0.tab=0", [_S], None),
    "tableLink": (lambda e: f"/graph?g0.expr={urllib.parse.quote_plus(e, safe='')}&g0.tab=1", [_S], None),
    "parseDuration": (_parse_duration, [_S], None),
    "externalURL": (None, [], None), "pathPrefix": (None, [], None),
    # need a PromQL engine: parse, but fail when executed
    "query": (None, [_S], None), "first": (None, [_A], None), "label": (None, [_S, _A], None),
    "value": (None, [_A], None), "strvalue": (None, [_A], None), "sortByLabel": (None, [_S, _A], None),
}


# ------------------------------------------------------------------------ public API

class Template:
    """A parsed template; :meth:`render` expands it for one alert."""

    def __init__(self, text: str, nodes: list):
        self.text, self._nodes = text, nodes

    def render(self, labels: dict[str, str], value: float,
               external_labels: dict[str, str] | None = None, external_url: str = "") -> str:
        """Expand with ``.Labels``/``$labels``, ``.Value``/``$value`` and the external ones.

        As in Prometheus, a label whose value is empty does not exist.

        Raises :class:`TemplateError` where Prometheus would write
        ``<error expanding template: ...>`` instead.
        """
        data = _Data({str(k): str(v) for k, v in labels.items() if v != ""},
                     {str(k): str(v) for k, v in (external_labels or {}).items()},
                     external_url, float(value))
        ex = _Exec(self.text, data)
        ex.walk(self._nodes, data)
        return "".join(ex.out)


def parse(text: str) -> Template:
    """Parse ``text``; raise :class:`TemplateError` where ``promtool check rules`` would."""
    return Template(text, _Parser(text).parse())


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str) -> Template:
    return parse(text)


def expand(text: str, labels: dict[str, str], value: float,
           external_labels: dict[str, str] | None = None, external_url: str = "") -> str:
    """Parse (cached) and render ``text`` for one alert."""
    return _parse_cached(text).render(labels, value, external_labels, external_url)
