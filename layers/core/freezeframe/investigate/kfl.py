"""A filter language in the style of Kubeshark's KFL, compiled to an Athena SQL WHERE clause over one evidence table.

    http and status >= 500 and dst.namespace == "production"
    dns and rcode == "NXDOMAIN"
    tcp and retransmission_rate > 0.01
    tls and not established and sni endswith ".example.com"
    http and request.method in ["POST", "PUT"] and (status == 502 or status == 504)

Grammar (lowest precedence first; keywords are case-insensitive)::

    filter     := or
    or         := and (("or" | "||") and)*
    and        := not (("and" | "&&") not)*
    not        := ("not" | "!") not | primary
    primary    := "(" or ")" | PROTOCOL | comparison | FIELD            (a bare FIELD must be boolean)
    comparison := FIELD ("==" | "!=" | "<" | "<=" | ">" | ">=") literal
                | FIELD ["not"] "in" "[" literal ("," literal)* "]"
                | FIELD ("contains" | "startswith" | "endswith" | "matches") STRING
    literal    := STRING | NUMBER | "true" | "false" | "null"

PROTOCOL is one of http, dns, tls (each selects its table) or tcp, udp (the connections table, `proto = 'tcp'`).
Without one, the table is the first of connections, http, dns, tls that has every field named. FIELD is a column of
that table or a dotted alias: `src.namespace` / `dst.pod` / `src.ip` / ... for the src_/dst_ columns, `src.name` for
the pod, `request.method`, `request.path`, `response.status`. `rcode` compared with a string means `rcode_name`.
`== null` / `!= null` test for NULL. On a list column (answers, alpn) `contains` tests membership.

The compiler builds a sqlglot tree: literals become SQL literals (quoted and escaped by sqlglot), and field names can
only be columns of the schema, so no input can change the query's structure. Errors carry the position and show it
with a caret.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from sqlglot import exp

from freezeframe.contracts.errors import FreezeframeError
from freezeframe.contracts.schemas import PARTITION_KEYS, VIEWS

PROTOCOL_TABLES = {"http": "http", "dns": "dns", "tls": "tls", "tcp": "connections", "udp": "connections"}
TRANSPORTS = ("tcp", "udp")
# Without a protocol keyword, the first table that has every field named wins.
TABLE_ORDER = ("connections", "http", "dns", "tls")
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
STRING_OPERATORS = ("contains", "startswith", "endswith", "matches")
KEYWORDS = {"and", "or", "not", "in", "true", "false", "null", *STRING_OPERATORS}
ALIASES = {
    "request.method": "method",
    "request.path": "path",
    "request.host": "host",
    "response.status": "status",
    "src.name": "src_pod",
    "dst.name": "dst_pod",
}
DOTTED_SIDES = ("src", "dst")
# The filters the docs show, plus one per operator and field kind; each compiles to SQL that Trino (Athena's engine)
# and the local engine answer alike (tests/integration/test_engines_agree.py).
EXAMPLES = (
    'http and status >= 500 and dst.namespace == "production"',
    'dns and rcode == "NXDOMAIN"',
    "tcp and retransmission_rate > 0.01",
    'tls and not established and sni endswith ".example.com"',
    'http and request.method in ["POST", "PUT"] and (status == 502 or status == 504)',
    'http and status == null',
    'http and response.status not in [200, 204] and request.path startswith "/api/"',
    'http and host contains "shop" || latency_us > 1234567',
    'http and path matches "^/api/v[0-9]+/orders"',
    'dns and answers contains "10.96.0.17"',
    'tls and alpn contains "h2" and version != "TLS 1.3"',
    'tcp and ts >= "2025-11-21T04:40:07.5Z" and src.namespace == "production"',
    'udp and dst.port == 53',
    'tcp and !(conn_state in ["SF", "S1"]) && handshake_us >= 1500',
)
MAX_NESTING = 64


class KflError(FreezeframeError):
    """A filter expression that cannot be parsed or compiled; `position` is the 0-based offset of the problem."""

    def __init__(self, message: str, text: str, position: int) -> None:
        self.message = message
        self.text = text
        self.position = position
        super().__init__(f"{message} (at column {position + 1})\n  {text}\n  {' ' * position}^")


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # 'string', 'number', 'ident', 'op', 'end'
    value: Any
    position: int
    text: str


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\],])
""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


def _unescape(body: str, text: str, position: int) -> str:
    out = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            code = body[index + 1]
            if code not in _ESCAPES:
                raise KflError(f"unknown escape \\{code} in a string (use \\\\ \\\" \\' \\n \\t)", text,
                               position + 1 + index)
            out.append(_ESCAPES[code])
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            char = text[position]
            if char in "\"'":
                raise KflError("unterminated string", text, position)
            if char == "=":
                raise KflError("'=' is not an operator; compare with '=='", text, position)
            if char in "&|":
                raise KflError(f"'{char}' is not an operator; use '{char * 2}' or '{'and' if char == '&' else 'or'}'",
                               text, position)
            raise KflError(f"unexpected character {char!r}", text, position)
        kind = match.lastgroup or ""
        raw = match.group()
        if kind == "number":
            value: Any = float(raw) if any(c in raw for c in ".eE") else int(raw)
            tokens.append(Token("number", value, position, raw))
        elif kind == "string":
            tokens.append(Token("string", _unescape(raw[1:-1], text, position), position, raw))
        elif kind == "ident":
            lowered = raw.lower()
            tokens.append(Token("keyword" if lowered in KEYWORDS else "ident",
                                lowered if lowered in KEYWORDS else raw, position, raw))
        elif kind == "op":
            tokens.append(Token("op", raw, position, raw))
        position = match.end()
    tokens.append(Token("end", None, len(text), ""))
    return tokens


# ---------------------------------------------------------------- syntax tree


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any  # str, int, float, bool or None
    position: int


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    position: int


@dataclass(frozen=True, slots=True)
class Protocol:
    name: str
    position: int


@dataclass(frozen=True, slots=True)
class Compare:
    field: Field
    operator: str  # a comparison, 'in', 'not in' or a string operator
    values: tuple[Literal, ...]
    position: int


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class Logical:
    operator: str  # 'and' | 'or'
    operands: tuple[Node, ...]


Node = Literal | Field | Protocol | Compare | Not | Logical


# ---------------------------------------------------------------- parser


@dataclass
class _Parser:
    text: str
    tokens: list[Token]
    index: int = 0
    depth: int = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def is_(self, kind: str, *values: str) -> bool:
        token = self.current
        return token.kind == kind and (not values or token.value in values)

    def fail(self, message: str, token: Token | None = None) -> KflError:
        token = token or self.current
        found = "the end of the filter" if token.kind == "end" else repr(token.text)
        return KflError(f"{message}, found {found}", self.text, token.position)

    def parse(self) -> Node:
        if self.is_("end"):
            raise KflError("empty filter", self.text, 0)
        node = self.or_()
        if not self.is_("end"):
            raise self.fail("expected 'and', 'or' or the end of the filter")
        return node

    def or_(self) -> Node:
        operands = [self.and_()]
        while self.is_("keyword", "or") or self.is_("op", "||"):
            self.advance()
            operands.append(self.and_())
        return operands[0] if len(operands) == 1 else Logical("or", tuple(operands))

    def and_(self) -> Node:
        operands = [self.not_()]
        while self.is_("keyword", "and") or self.is_("op", "&&"):
            self.advance()
            operands.append(self.not_())
        return operands[0] if len(operands) == 1 else Logical("and", tuple(operands))

    def not_(self) -> Node:
        if self.is_("keyword", "not") or self.is_("op", "!"):
            self.nest()
            self.advance()
            node = Not(self.not_())
            self.depth -= 1
            return node
        return self.primary()

    def nest(self) -> None:
        # Bounded so that a hostile filter gets an error, not a RecursionError.
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.fail(f"more than {MAX_NESTING} nested parentheses or nots")

    def primary(self) -> Node:
        token = self.current
        if self.is_("op", "("):
            self.nest()
            self.advance()
            node = self.or_()
            if not self.is_("op", ")"):
                raise self.fail(f"expected ')' to close the '(' at column {token.position + 1}")
            self.advance()
            self.depth -= 1
            return node
        if token.kind != "ident":
            raise self.fail("expected a protocol (http, dns, tls, tcp, udp), a field or '('")
        self.advance()
        if token.value.lower() in PROTOCOL_TABLES and not self._starts_comparison():
            return Protocol(token.value.lower(), token.position)
        name = token.value
        target = Field(name, token.position)
        operator_token = self.current
        if self.is_("op", *COMPARISONS):
            self.advance()
            return Compare(target, operator_token.value, (self.literal(operator_token.value),), operator_token.position)
        if self.is_("keyword", "in") or self.is_("keyword", "not") and self._peek_is("keyword", "in"):
            negated = self.is_("keyword", "not")
            if negated:
                self.advance()
            self.advance()
            return Compare(target, "not in" if negated else "in", self.list_(), operator_token.position)
        if self.is_("keyword", *STRING_OPERATORS):
            self.advance()
            value = self.literal(operator_token.value)
            if not isinstance(value.value, str):
                raise KflError(f"'{operator_token.value}' takes a string", self.text, value.position)
            return Compare(target, operator_token.value, (value,), operator_token.position)
        if self.is_("end") or self.is_("op", ")") or self.is_("keyword", "and", "or") or self.is_("op", "&&", "||"):
            return target  # a bare (boolean) field; its type is checked when compiling
        raise self.fail(f"expected a comparison (==, !=, <, <=, >, >=, in, contains, ...) after {name!r}")

    def _starts_comparison(self) -> bool:
        return self.is_("op", *COMPARISONS) or self.is_("keyword", "in", *STRING_OPERATORS)

    def _peek_is(self, kind: str, value: str) -> bool:
        token = self.tokens[self.index + 1]
        return token.kind == kind and token.value == value

    def literal(self, after: str) -> Literal:
        token = self.current
        if token.kind in ("string", "number"):
            self.advance()
            return Literal(token.value, token.position)
        if token.kind == "keyword" and token.value in ("true", "false", "null"):
            self.advance()
            return Literal({"true": True, "false": False, "null": None}[token.value], token.position)
        raise self.fail(f"expected a value (a \"string\", a number, true, false or null) after '{after}'")

    def list_(self) -> tuple[Literal, ...]:
        if not self.is_("op", "["):
            raise self.fail("expected '[' to start the list after 'in'")
        opening = self.advance()
        values = [self.literal("[")]
        while self.is_("op", ","):
            self.advance()
            values.append(self.literal(","))
        if not self.is_("op", "]"):
            raise self.fail(f"expected ',' or ']' to close the list opened at column {opening.position + 1}")
        self.advance()
        return tuple(values)


def parse(text: str) -> Node:
    return _Parser(text, tokenize(text)).parse()


# ---------------------------------------------------------------- compiler


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    table: str
    where: str  # Athena SQL boolean expression
    expression: exp.Expr = field(repr=False)

    def select(self, incident_id: str | None = None, limit: int | None = None, columns: Sequence[str] = ("*",)) -> str:
        """A SELECT of the matching rows, newest last, optionally one incident's only and limited."""
        condition: exp.Expr = self.expression
        if incident_id is not None:
            condition = exp.and_(exp.EQ(this=exp.column("incident_id"), expression=exp.Literal.string(incident_id)),
                                 exp.paren(condition.copy(), copy=False))
        query = exp.select(*columns).from_(self.table).where(condition).order_by("ts")
        if limit is not None:
            query = query.limit(limit)
        return query.sql(dialect="athena")


def _walk(node: Node) -> list[Node]:
    if isinstance(node, Not):
        return [node, *_walk(node.operand)]
    if isinstance(node, Logical):
        return [node, *(n for operand in node.operands for n in _walk(operand))]
    return [node]


def _column_types(table: str) -> dict[str, pa.DataType]:
    types = {f.name: f.type for f in VIEWS[table]}
    types.update({key: pa.string() for key in PARTITION_KEYS})
    return types


def _column_name(name: str) -> str:
    lowered = name.lower()
    if lowered in ALIASES:
        return ALIASES[lowered]
    side, _, rest = lowered.partition(".")
    if side in DOTTED_SIDES and rest and "." not in rest:
        return f"{side}_{rest}"
    return lowered


def _choose_table(text: str, nodes: list[Node]) -> str:
    protocols = [n for n in nodes if isinstance(n, Protocol)]
    tables = {PROTOCOL_TABLES[p.name] for p in protocols}
    if len(tables) > 1:
        names = ", ".join(sorted({p.name for p in protocols}))
        second = next(p for p in protocols if PROTOCOL_TABLES[p.name] != PROTOCOL_TABLES[protocols[0].name])
        raise KflError(f"a filter reads one table, but {names} are in different tables; run one filter per "
                       "protocol", text, second.position)
    if tables:
        return tables.pop()
    fields = [n.field if isinstance(n, Compare) else n for n in nodes if isinstance(n, Compare | Field)]
    for table in TABLE_ORDER:
        types = _column_types(table)
        if all(_resolve(f.name, types) is not None for f in fields):
            return table
    for target in fields:
        if all(_resolve(target.name, _column_types(t)) is None for t in TABLE_ORDER):
            raise KflError(f"no table has a field {target.name!r}; start the filter with a protocol (http, dns, tls, "
                           "tcp, udp) to see that table's fields in the error", text, target.position)
    raise KflError("no one table has all these fields; start the filter with a protocol (http, dns, tls, tcp, udp)",
                   text, fields[-1].position)


def _resolve(name: str, types: dict[str, pa.DataType]) -> str | None:
    column = _column_name(name)
    return column if column in types else None


@dataclass
class _Compiler:
    text: str
    table: str
    types: dict[str, pa.DataType]

    def node(self, node: Node) -> exp.Expr:
        if isinstance(node, Logical):
            parts = [self.node(operand) for operand in node.operands]
            # A table-selecting keyword (http, dns, tls) compiles to TRUE: drop it from an AND, and an OR with it is
            # TRUE.
            if node.operator == "or" and any(isinstance(p, exp.Boolean) and p.this is True for p in parts):
                return exp.true()
            kept = [p for p in parts if not (isinstance(p, exp.Boolean) and p.this is True)] or [exp.true()]
            if len(kept) == 1:
                return kept[0]
            combined = exp.and_(*kept) if node.operator == "and" else exp.or_(*kept)
            return exp.paren(combined, copy=False)
        if isinstance(node, Not):
            return exp.Not(this=exp.paren(self.node(node.operand), copy=False))
        if isinstance(node, Protocol):
            if node.name in TRANSPORTS:
                return exp.EQ(this=exp.column("proto"), expression=exp.Literal.string(node.name))
            return exp.true()
        if isinstance(node, Field):
            column, type_ = self.column(node, None)
            if not pa.types.is_boolean(type_):
                raise KflError(f"{node.name!r} is not a boolean field; compare it (e.g. {node.name} == ...)",
                               self.text, node.position)
            return exp.column(column)
        if isinstance(node, Compare):
            return self.compare(node)
        raise KflError("a bare value is not a filter", self.text, node.position)

    def column(self, target: Field, sample: Literal | None) -> tuple[str, pa.DataType]:
        column = _resolve(target.name, self.types)
        # rcode compared with a name means the name column (dns and rcode == "NXDOMAIN").
        if column == "rcode" and sample is not None and isinstance(sample.value, str):
            column = "rcode_name"
        if column is None:
            known = sorted(self.types) + sorted(ALIASES) + [f"{s}.{c[4:]}" for c in self.types for s in DOTTED_SIDES
                                                             if c.startswith(f"{s}_")]
            close = difflib.get_close_matches(target.name.lower(), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise KflError(f"the {self.table} table has no field {target.name!r}{hint}", self.text, target.position)
        return column, self.types[column]

    def value(self, literal: Literal, type_: pa.DataType, column: str) -> exp.Expr:
        value = literal.value
        if value is None:
            return exp.null()
        if pa.types.is_boolean(type_):
            if not isinstance(value, bool):
                raise self.mismatch(literal, column, "true or false")
            return exp.true() if value else exp.false()
        if pa.types.is_integer(type_) or pa.types.is_floating(type_):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.mismatch(literal, column, "a number")
            return exp.Literal.number(value)
        if pa.types.is_timestamp(type_):
            if not isinstance(value, str):
                raise self.mismatch(literal, column, "a time as a string, e.g. \"2025-11-21 04:40:00\"")
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise KflError(f"{value!r} is not an ISO 8601 time", self.text, literal.position) from None
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC).replace(tzinfo=None)
            return exp.cast(exp.Literal.string(moment.isoformat(sep=" ")), exp.DataType.build("timestamp"))
        if pa.types.is_string(type_):
            if not isinstance(value, str):
                raise self.mismatch(literal, column, "a \"string\"")
            return exp.Literal.string(value)
        raise KflError(f"{column!r} ({type_}) cannot be compared with a value", self.text, literal.position)

    def mismatch(self, literal: Literal, column: str, wanted: str) -> KflError:
        shown = "null" if literal.value is None else repr(literal.value).replace("True", "true").replace(
            "False", "false")
        return KflError(f"{column!r} needs {wanted}, not {shown}", self.text, literal.position)

    def compare(self, node: Compare) -> exp.Expr:
        column, type_ = self.column(node.field, node.values[0])
        target = exp.column(column)
        if node.operator in STRING_OPERATORS:
            needle = node.values[0]
            if pa.types.is_list(type_) and node.operator == "contains":
                item = self.value(needle, type_.value_type, column)
                return exp.ArrayContains(this=target, expression=item)
            if not pa.types.is_string(type_):
                raise KflError(f"'{node.operator}' works on text fields; {column!r} is {type_}", self.text,
                               node.position)
            text = exp.Literal.string(needle.value)
            if node.operator == "contains":
                return exp.GT(this=exp.StrPosition(this=target, substr=text), expression=exp.Literal.number(0))
            if node.operator == "startswith":
                return exp.StartsWith(this=target, expression=text)
            if node.operator == "endswith":
                pattern = "%" + re.sub(r"([\\%_])", r"\\\1", needle.value)
                return exp.Escape(this=exp.Like(this=target, expression=exp.Literal.string(pattern)),
                                  expression=exp.Literal.string("\\"))
            return exp.RegexpLike(this=target, expression=text)
        if pa.types.is_list(type_):
            raise KflError(f"{column!r} is a list; test membership with '{node.field.name} contains ...'",
                           self.text, node.position)
        if node.operator in ("in", "not in"):
            values = [self.value(v, type_, column) for v in node.values]
            if any(isinstance(v, exp.Null) for v in values):
                raise KflError("null cannot be in a list; use '== null'", self.text, node.position)
            membership = exp.In(this=target, expressions=values)
            return exp.Not(this=membership) if node.operator == "not in" else membership
        value = self.value(node.values[0], type_, column)
        if isinstance(value, exp.Null):
            if node.operator not in ("==", "!="):
                raise KflError(f"'{node.operator} null' is never true; use '== null' or '!= null'", self.text,
                               node.position)
            is_null = exp.Is(this=target, expression=exp.null())
            return is_null if node.operator == "==" else exp.Not(this=is_null)
        operators: dict[str, type[exp.Expr]] = {"==": exp.EQ, "!=": exp.NEQ, "<": exp.LT, "<=": exp.LTE,
                                                      ">": exp.GT, ">=": exp.GTE}
        return operators[node.operator](this=target, expression=value)


def compile_filter(text: str) -> CompiledFilter:
    """Parse a KFL expression and compile it to a WHERE clause over the one table it selects."""
    tree = parse(text)
    nodes = _walk(tree)
    table = _choose_table(text, nodes)
    condition = _Compiler(text, table, _column_types(table)).node(tree)
    return CompiledFilter(table, condition.sql(dialect="athena"), condition)
