"""Just enough PromQL to draw ``gateway.json`` from recorded scrapes, without a Prometheus.

The dashboard's queries keep to this subset, and a unit test parses every one of them:

    expr     := agg | call | selector
    agg      := ("sum" | "max" | "min") "by" "(" labels ")" "(" expr ")"
    call     := "histogram_quantile" "(" number "," expr ")"
              | ("rate" | "increase") "(" selector "[" duration "]" ")"
    selector := metric [ "{" label ("=" | "!=" | "=~" | "!~") "string" , … "}" ]

Evaluation follows Prometheus closely enough for a picture: ``rate`` is the counter's rise
(resets allowed) over the samples inside the window, divided by their time span; ``increase``
is that rate times the window; ``histogram_quantile`` interpolates linearly inside a bucket.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]
"""An instant vector: labels (without the metric name) → value."""


@dataclass(frozen=True)
class Scrape:
    """One scrape: its time and every sample in it, keyed by (name, labels)."""

    t: float
    samples: Mapping[tuple[str, Labels], float]


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[Matcher, ...]


@dataclass(frozen=True)
class RangeCall:
    function: str  # rate | increase
    selector: Selector
    window_s: float


@dataclass(frozen=True)
class Aggregate:
    op: str  # sum | max | min
    by: tuple[str, ...]
    inner: Expr


@dataclass(frozen=True)
class Quantile:
    q: float
    inner: Expr


Expr = Union[Selector, RangeCall, Aggregate, Quantile]  # noqa: UP007 - a runtime alias

_TOKEN = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<duration>\d+(?:ms|s|m|h))(?=\])'
    r"|(?P<number>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)"
    r"|(?P<op>=~|!~|!=|=|[(){}\[\],]))"
)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(text: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)", text).groups()  # type: ignore[union-attr]
    return int(number) * _UNITS[unit]


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text.rstrip()):
            m = _TOKEN.match(text, pos)
            if m is None or m.lastgroup is None:
                raise ValueError(f"cannot read {text[pos:]!r}")
            self.tokens.append((m.lastgroup, m.group(m.lastgroup)))
            pos = m.end()
        self.i = 0

    def peek(self) -> str:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else ""

    def take(self, expected: str | None = None, kind: str | None = None) -> str:
        if self.i >= len(self.tokens):
            raise ValueError(f"unexpected end, expected {expected or kind}")
        got_kind, value = self.tokens[self.i]
        if (expected is not None and value != expected) or (kind is not None and got_kind != kind):
            raise ValueError(f"expected {expected or kind}, got {value!r}")
        self.i += 1
        return value

    def expr(self) -> Expr:
        word = self.take(kind="name")
        if word in ("sum", "max", "min"):
            self.take("by")
            self.take("(")
            by = [self.take(kind="name")]
            while self.peek() == ",":
                self.take(",")
                by.append(self.take(kind="name"))
            self.take(")")
            self.take("(")
            inner = self.expr()
            self.take(")")
            return Aggregate(word, tuple(by), inner)
        if word == "histogram_quantile":
            self.take("(")
            q = float(self.take(kind="number"))
            self.take(",")
            inner = self.expr()
            self.take(")")
            return Quantile(q, inner)
        if word in ("rate", "increase"):
            self.take("(")
            selector = self.selector(self.take(kind="name"))
            self.take("[")
            window = duration_s(self.take(kind="duration"))
            self.take("]")
            self.take(")")
            return RangeCall(word, selector, window)
        return self.selector(word)

    def selector(self, metric: str) -> Selector:
        matchers: list[Matcher] = []
        if self.peek() == "{":
            self.take("{")
            while self.peek() != "}":
                label = self.take(kind="name")
                op = self.take(kind="op")
                value = self.take(kind="string")[1:-1].replace('\\"', '"')
                matchers.append(Matcher(label, op, value))
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
        return Selector(metric, tuple(matchers))


def parse(text: str) -> Expr:
    parser = _Parser(text)
    expr = parser.expr()
    if parser.i != len(parser.tokens):
        raise ValueError(f"trailing input in {text!r}")
    return expr


def metric_names(expr: Expr) -> set[str]:
    """The metric names an expression reads."""
    if isinstance(expr, Selector):
        return {expr.metric}
    if isinstance(expr, RangeCall):
        return {expr.selector.metric}
    return metric_names(expr.inner)


def label_names(expr: Expr) -> set[str]:
    """The label names an expression matches on or groups by (``le`` included)."""
    if isinstance(expr, Selector):
        return {m.label for m in expr.matchers}
    if isinstance(expr, RangeCall):
        return label_names(expr.selector)
    if isinstance(expr, Aggregate):
        return set(expr.by) | label_names(expr.inner)
    return {"le"} | label_names(expr.inner)


def _select(selector: Selector, scrape: Scrape) -> Vector:
    out: Vector = {}
    for (name, labels), value in scrape.samples.items():
        if name == selector.metric and all(m.matches(dict(labels)) for m in selector.matchers):
            out[labels] = value
    return out


def _range(call: RangeCall, scrapes: Sequence[Scrape], t: float) -> Vector:
    inside = [s for s in scrapes if t - call.window_s <= s.t <= t]
    if len(inside) < 2:
        return {}
    points = [(s.t, _select(call.selector, s)) for s in inside]
    out: Vector = {}
    for labels in points[-1][1]:
        series = [(ts, v[labels]) for ts, v in points if labels in v]
        if len(series) < 2:
            continue
        rise = sum(b - a if b >= a else b for (_, a), (_, b) in itertools.pairwise(series))
        rate = rise / (series[-1][0] - series[0][0])
        out[labels] = rate * call.window_s if call.function == "increase" else rate
    return out


def _aggregate(agg: Aggregate, vector: Vector) -> Vector:
    groups: dict[Labels, list[float]] = {}
    for labels, value in vector.items():
        key = frozenset((k, v) for k, v in labels if k in agg.by)
        groups.setdefault(key, []).append(value)
    picks: dict[str, Callable[[list[float]], float]] = {"sum": sum, "max": max, "min": min}
    pick = picks[agg.op]
    return {key: pick(values) for key, values in groups.items()}


def _quantile(q: float, vector: Vector) -> Vector:
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for labels, value in vector.items():
        le = dict(labels).get("le")
        if le is not None:
            key = frozenset((k, v) for k, v in labels if k != "le")
            groups.setdefault(key, []).append((float(le), value))
    out: Vector = {}
    for key, buckets in groups.items():
        buckets.sort()
        total = buckets[-1][1]
        if total <= 0:
            continue  # no observations in the window: Prometheus answers NaN, Grafana a gap
        rank, lower, below = q * total, 0.0, 0.0
        for upper, count in buckets:
            if count >= rank:
                if math.isinf(upper):
                    out[key] = lower
                else:
                    share = (rank - below) / (count - below) if count > below else 1.0
                    out[key] = lower + (upper - lower) * share
                break
            lower, below = upper, count
    return out


def evaluate(expr: Expr, scrapes: Sequence[Scrape], t: float) -> Vector:
    """The instant vector ``expr`` gives at time ``t``, from the scrapes up to then."""
    if isinstance(expr, Selector):
        latest = [s for s in scrapes if s.t <= t]
        return _select(expr, latest[-1]) if latest else {}
    if isinstance(expr, RangeCall):
        return _range(expr, scrapes, t)
    if isinstance(expr, Aggregate):
        return _aggregate(expr, evaluate(expr.inner, scrapes, t))
    return _quantile(expr.q, evaluate(expr.inner, scrapes, t))


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Grafana's ``$name`` variables, longest names first."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${name}", variables[name])
    return expr
