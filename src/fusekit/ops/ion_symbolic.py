"""Symbolic derivatives of the ion step, for forward-mode parameter sensitivities.

The channel functions are plain arithmetic (see :mod:`fusekit.ops.ion_channel`), so calling
them with :class:`Expr` arguments records them as an expression graph. From the graph of one
whole time step (gates, conductances, voltage) :func:`tangent_step_source` emits the step and
its tangent: for every direction ``j`` (a parameter row, or a constant injected current)

    dx'_j = (d step / d x) dx_j + d step / d theta_j,    x = (v, states),

with the partial derivatives taken symbolically once, at generation time. Nodes are interned
(equal subexpressions are one node) and trivial terms folded (``x * 0``, ``x + 0``), so the
emitted code computes each partial derivative once and reuses the values of the step (the
``exp`` of a rate function serves its derivative too). Gates read ``v`` and parameters only,
so ``d s_k' / d s_i`` is zero unless ``i == k``: the Jacobian is sparse and a direction costs
a few multiply-adds per state.

Every backend runs the same emitted lines with its own math (``EXP``, ``LOG``, ``SQRT``,
``VTRAP``, ``VTRAP_DX``, ``SIGN``) and constants (``K<i>`` globals in the kernel's dtype).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .._errors import InputError
from .ion_channel import (
    VTRAP_SERIES_BELOW,
    Arg,
    ChannelSet,
    compile_channel_function,
    vtrap_dx_series,
    vtrap_series,
)

__all__ = ["Expr", "Graph", "TracedStep", "adjoint_step_source", "share_exponentials",
           "tangent_step_source", "trace_step", "value_step_source", "vtrap_dx", "vtrap_e"]


class UntraceableChannelError(InputError):
    """A channel function could not be traced (it branches or calls a float-only function)."""


class Expr:
    """A node of an expression :class:`Graph`: an operation, a variable or a constant.

    Python arithmetic on it (and ``exp``/``log``/``sqrt``/``vtrap`` of the channel math)
    builds new nodes.
    """

    __slots__ = ("graph", "op", "args", "value", "name", "deps", "index")

    def __init__(self, graph: Graph, op: str, args: tuple[Expr, ...], value: float = 0.0,
                 name: str = ""):
        self.graph, self.op, self.args, self.value, self.name = graph, op, args, value, name
        self.deps: frozenset[int] = (frozenset((id(self),)) if op == "var" else
                                     frozenset().union(*(a.deps for a in args)))
        self.index = len(graph.nodes)

    # arithmetic -------------------------------------------------------------------------
    def _wrap(self, other: Any) -> Expr:
        return other if isinstance(other, Expr) else self.graph.const(other)

    def __add__(self, o: Any) -> Expr:
        return self.graph.add(self, self._wrap(o))

    def __radd__(self, o: Any) -> Expr:
        return self.graph.add(self._wrap(o), self)

    def __sub__(self, o: Any) -> Expr:
        return self.graph.sub(self, self._wrap(o))

    def __rsub__(self, o: Any) -> Expr:
        return self.graph.sub(self._wrap(o), self)

    def __mul__(self, o: Any) -> Expr:
        return self.graph.mul(self, self._wrap(o))

    def __rmul__(self, o: Any) -> Expr:
        return self.graph.mul(self._wrap(o), self)

    def __truediv__(self, o: Any) -> Expr:
        return self.graph.div(self, self._wrap(o))

    def __rtruediv__(self, o: Any) -> Expr:
        return self.graph.div(self._wrap(o), self)

    def __neg__(self) -> Expr:
        return self.graph.neg(self)

    def __pos__(self) -> Expr:
        return self

    def __pow__(self, o: Any) -> Expr:
        if isinstance(o, Expr):
            if o.op != "const":
                return self.graph.exp(self.graph.log(self) * o)
            o = o.value
        return self.graph.pow(self, float(o))

    def __abs__(self) -> Expr:
        return self.graph.unary("abs", self)

    # NumPy calls these for ``np.exp(expr)`` etc.
    def exp(self) -> Expr:
        """``exp`` of this node."""
        return self.graph.exp(self)

    def log(self) -> Expr:
        """``log`` of this node."""
        return self.graph.log(self)

    def sqrt(self) -> Expr:
        """``sqrt`` of this node."""
        return self.graph.sqrt(self)

    def __bool__(self) -> bool:
        raise TypeError(
            "a channel function compared or branched on its arguments; forward-mode "
            "sensitivities need plain arithmetic (+ - * / **, exp, log, sqrt, vtrap)"
        )

    __lt__ = __le__ = __gt__ = __ge__ = lambda self, o: self.__bool__()  # noqa: E731

    def __float__(self) -> float:
        raise TypeError("a channel function called a float-only function (math.exp?) on its "
                        "arguments; use fusekit.ops.ion_channel's exp, log, sqrt and vtrap")

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


def _vtrap_value(x: float, y: float) -> float:
    u = x / y
    if abs(u) < VTRAP_SERIES_BELOW:
        return vtrap_series(u, y)
    return x / math.expm1(u)


def vtrap_dx(x: Any, y: Any, value: Any, where: Callable[..., Any],
             absolute: Callable[[Any], Any]) -> Any:
    """``d vtrap(x, y) / dx = B'(x / y)`` with ``B(u) = u / (e^u - 1)``, in any array library.

    ``value`` is ``vtrap(x, y) = y B(u)``. Since ``B e^u = B + u``,
    ``B'(u) = (B / u)(1 - B - u)``, i.e. ``value (y - value - x) / (x y)``: no second
    ``exp``. Below ``|u| = VTRAP_SERIES_BELOW`` (where
    :func:`~fusekit.ops.ion_channel.vtrap` uses its series) the series
    ``-1/2 + u/6 - u^3/180 + u^5/5040`` (truncation below 2e-12 relative).
    """
    u = x / y
    small = absolute(u) < VTRAP_SERIES_BELOW
    series = vtrap_dx_series(u)
    xs = where(small, y + u * 0.0, x)  # the unused branch gets a harmless x
    direct = value * (y - value - xs) / (xs * y)
    return where(small, series, direct)


_FOLD: dict[str, Callable[..., float]] = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "neg": lambda a: -a, "exp": math.exp, "log": math.log,
    "sqrt": math.sqrt, "abs": abs, "sign": lambda a: float((a > 0) - (a < 0)),
    "vtrap": _vtrap_value,
    "vtrap_dx": lambda x, y, f: vtrap_dx(x, y, f, lambda c, a, b: a if c else b, abs),
    "vtrap_e": lambda x, y, e: vtrap_e(x, y, e, lambda c, a, b: a if c else b, abs),
    "vtrap_r": lambda x, y, e: vtrap_r(x, y, e, lambda c, a, b: a if c else b, abs),
    "vtrap_er": lambda x, y, r: vtrap_er(x, y, r, lambda c, a, b: a if c else b, abs),
    "vtrap_dxr": lambda x, y, f, r: vtrap_dxr(x, y, f, r, lambda c, a, b: a if c else b, abs),
}


class Graph:
    """Interned expression nodes: building the same operation twice returns one node."""

    def __init__(self) -> None:
        self.nodes: list[Expr] = []
        self._interned: dict[tuple[Any, ...], Expr] = {}
        self._diff: dict[tuple[int, int], Expr] = {}

    def _node(self, op: str, *args: Expr, value: float = 0.0, name: str = "") -> Expr:
        key = (op, *(id(a) for a in args), value, name)
        node = self._interned.get(key)
        if node is None:
            if op not in ("var", "const") and all(a.op == "const" for a in args):
                fold = _FOLD[op] if op != "pow" else (lambda a: a ** value)
                try:
                    return self.const(fold(*(a.value for a in args)))
                except (ArithmeticError, ValueError):
                    pass  # left for the kernel (inf/nan as its dtype computes them)
            node = Expr(self, op, args, value, name)
            self.nodes.append(node)
            self._interned[key] = node
        return node

    def var(self, name: str) -> Expr:
        """The input variable called ``name`` in the emitted code."""
        return self._node("var", name=name)

    def const(self, value: Any) -> Expr:
        """A constant (becomes a ``K<i>`` global of the kernel's dtype)."""
        return self._node("const", value=float(value))

    def _is(self, a: Expr, value: float) -> bool:
        return a.op == "const" and a.value == value

    def add(self, a: Expr, b: Expr) -> Expr:
        """The node ``a + b``, folded where trivial."""
        if self._is(a, 0.0):
            return b
        if self._is(b, 0.0):
            return a
        return self._node("add", a, b)

    def sub(self, a: Expr, b: Expr) -> Expr:
        """The node ``a - b``, folded where trivial."""
        if self._is(b, 0.0):
            return a
        if self._is(a, 0.0):
            return self.neg(b)
        return self._node("sub", a, b)

    def mul(self, a: Expr, b: Expr) -> Expr:
        """The node ``a * b``, folded where trivial."""
        if self._is(a, 0.0) or self._is(b, 0.0):
            return self.const(0.0)
        if self._is(a, 1.0):
            return b
        if self._is(b, 1.0):
            return a
        if self._is(a, -1.0):
            return self.neg(b)
        if self._is(b, -1.0):
            return self.neg(a)
        return self._node("mul", a, b)

    def div(self, a: Expr, b: Expr) -> Expr:
        """The node ``a / b``, folded where trivial."""
        if self._is(a, 0.0):
            return self.const(0.0)
        if self._is(b, 1.0):
            return a
        return self._node("div", a, b)

    def neg(self, a: Expr) -> Expr:
        """The node ``neg`` of the arguments."""
        if a.op == "neg":
            return a.args[0]
        return self._node("neg", a)

    def pow(self, a: Expr, c: float) -> Expr:
        """The node ``pow`` of the arguments."""
        if c == 0.0:
            return self.const(1.0)
        if c == 1.0:
            return a
        return self._node("pow", a, value=c)

    def exp(self, a: Expr) -> Expr:
        """The node ``exp`` of the arguments."""
        return self._node("exp", a)

    def log(self, a: Expr) -> Expr:
        """The node ``log`` of the arguments."""
        return self._node("log", a)

    def sqrt(self, a: Expr) -> Expr:
        """The node ``sqrt`` of the arguments."""
        return self._node("sqrt", a)

    def unary(self, op: str, a: Expr) -> Expr:
        """The node ``unary`` of the arguments."""
        return self._node(op, a)

    def vtrap(self, x: Expr, y: Expr) -> Expr:
        """The node ``vtrap`` of the arguments."""
        return self._node("vtrap", x, y)

    # derivative -------------------------------------------------------------------------
    def diff(self, node: Expr, x: Expr) -> Expr:
        """``d node / d x`` as a node of this graph (``x`` a variable)."""
        if id(x) not in node.deps:
            return self.const(0.0)
        if node is x:
            return self.const(1.0)
        key = (id(node), id(x))
        got = self._diff.get(key)
        if got is None:
            got = self._diff[key] = self._diff_uncached(node, x)
        return got

    def _diff_uncached(self, n: Expr, x: Expr) -> Expr:
        d = [self.diff(a, x) for a in n.args]
        a = n.args[0]
        if n.op == "add":
            return self.add(d[0], d[1])
        if n.op == "sub":
            return self.sub(d[0], d[1])
        if n.op == "neg":
            return self.neg(d[0])
        if n.op == "mul":
            return self.add(self.mul(d[0], n.args[1]), self.mul(a, d[1]))
        if n.op == "div":  # (da - (a / b) db) / b
            return self.div(self.sub(d[0], self.mul(n, d[1])), n.args[1])
        if n.op == "pow":
            return self.mul(self.mul(self.const(n.value), self.pow(a, n.value - 1.0)), d[0])
        if n.op == "exp":
            return self.mul(n, d[0])
        if n.op == "log":
            return self.div(d[0], a)
        if n.op == "sqrt":
            return self.div(d[0], self.mul(self.const(2.0), n))
        if n.op == "abs":
            return self.mul(self._node("sign", a), d[0])
        if n.op == "vtrap":  # vtrap = y B(x/y): d/dx = B'(u), d/dy = (vtrap - x B'(u)) / y
            y = n.args[1]
            bx = self._node("vtrap_dx", a, y, n)
            return self.add(self.mul(bx, d[0]),
                            self.mul(self.div(self.sub(n, self.mul(a, bx)), y), d[1]))
        raise NotImplementedError(f"no derivative for {n.op}")  # sign, vtrap_dx: never needed

    def adjoints(self, seeds: Sequence[tuple[Expr, Expr]],
                 stop: Sequence[Expr] = ()) -> dict[int, Expr]:
        """Reverse-mode sweep: ``{id(node): adjoint}`` for the nodes the seeds reach.

        ``seeds`` pairs output nodes with their adjoints; each node's adjoint is
        ``sum over its users u of adjoint(u) * d u / d node``, built in one pass from the
        outputs down (so a shared subexpression is differentiated once for all inputs,
        where :meth:`diff` differentiates it once per input). Nodes in ``stop`` get their
        adjoint but pass nothing on: they act as inputs.
        """
        stop_ids = {id(s) for s in stop}
        adj: dict[int, Expr] = {}
        reach: dict[int, Expr] = {}
        stack = []
        for node, seed in seeds:
            adj[id(node)] = self.add(adj[id(node)], seed) if id(node) in adj else seed
            stack.append(node)
        while stack:
            node = stack.pop()
            if id(node) in reach:
                continue
            reach[id(node)] = node
            if id(node) not in stop_ids:
                stack.extend(a for a in node.args if a.deps)
        for node in sorted(reach.values(), key=lambda n: n.index, reverse=True):
            a = adj.get(id(node))
            if a is None or id(node) in stop_ids or node.op in ("var", "const"):
                continue
            for arg, part in self._pullback(node, a):
                if arg.deps and not self._is(part, 0.0):
                    adj[id(arg)] = self.add(adj[id(arg)], part) if id(arg) in adj else part
        return adj

    def _pullback(self, n: Expr, a: Expr) -> list[tuple[Expr, Expr]]:
        """``(arg, a * d n / d arg)`` for the arguments of ``n`` that depend on a variable."""
        x, y = n.args[0], n.args[-1]
        out: list[tuple[Expr, Expr]] = []
        if n.op in ("add", "sub", "neg"):
            out = [(x, self.neg(a) if n.op == "neg" else a)]
            if n.op != "neg":
                out.append((y, a if n.op == "add" else self.neg(a)))
        elif n.op == "mul":
            out = ([(x, self.mul(self.mul(self.const(2.0), x), a))] if x is y
                   else [(x, self.mul(a, y)), (y, self.mul(a, x))])
        elif n.op == "div":  # a / y to the numerator, -(a / y) n to the denominator
            # (a constant y: times 1 / y, one rounding more but no division in the kernel)
            const_y = y.op == "const" and y.value != 0.0
            q = self.mul(a, self.const(1.0 / y.value)) if const_y else self.div(a, y)
            out = [(x, q), (y, self.neg(self.mul(q, n)))] if y.deps else [(x, q)]
        elif n.op == "pow":
            out = [(x, self.mul(a, self.mul(self.const(n.value), self.pow(x, n.value - 1.0))))]
        elif n.op == "exp":
            out = [(x, self.mul(a, n))]
        elif n.op == "log":
            out = [(x, self.div(a, x))]
        elif n.op == "sqrt":
            out = [(x, self.div(a, self.mul(self.const(2.0), n)))]
        elif n.op == "abs":
            out = [(x, self.mul(a, self._node("sign", x)))]
        elif n.op == "vtrap":  # see _diff_uncached
            bx = self._node("vtrap_dx", x, y, n)
            out = [(x, self.mul(a, bx))]
            if y.deps:
                out.append((y, self.mul(a, self.div(self.sub(n, self.mul(x, bx)), y))))
        else:
            raise NotImplementedError(f"no derivative for {n.op}")
        return [(arg, part) for arg, part in out if arg.deps]


_MATH_NAMES = {"exp": "EXP", "log": "LOG", "sqrt": "SQRT", "abs": "ABS", "sign": "SIGN",
               "vtrap": "VTRAP", "vtrap_dx": "VTRAP_DX", "vtrap_e": "VTRAP_E",
               "vtrap_r": "VTRAP_R", "vtrap_er": "VTRAP_ER", "vtrap_dxr": "VTRAP_DXR"}
_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def emit(outputs: Sequence[tuple[str, Expr]], indent: str, prefix: str = "t", *,
         share_exp: bool = False, const_prefix: str = "K", share_recip: bool = False
         ) -> tuple[list[str], dict[str, float]]:
    """Source lines assigning every ``(name, node)`` of ``outputs``, and their constants.

    Intermediate nodes become locals ``<prefix><i>``, each computed once; constants ``K<i>``
    (``<const_prefix><i>``)
    (values returned, for the backend to convert to its dtype); variables keep their names.
    The lines also use ``ONE`` (1 in the kernel's dtype).

    With ``share_exp`` the exponentials are lowered first (:func:`share_exponentials`):
    fewer ``EXP`` calls, and ``VTRAP_E(x, y, exp(x / y))`` in place of ``VTRAP(x, y)``. With
    ``share_recip`` too, what is divided by twice is divided once (:func:`share_reciprocals`).
    """
    replace = share_exponentials(outputs[0][1].graph, [n for _, n in outputs]) \
        if share_exp and outputs else {}
    if share_recip and outputs:
        replace.update(share_reciprocals(outputs[0][1].graph, [n for _, n in outputs], replace))
    names: dict[int, str] = {}
    consts: dict[str, float] = {}
    lines: list[str] = []

    def constant(value: float) -> str:
        name = f"{const_prefix}{len(consts)}"
        consts[name] = value
        return name

    def expression(node: Expr, args: list[str]) -> str:
        if node.op in _INFIX:
            return f"{args[0]} {_INFIX[node.op]} {args[1]}"
        if node.op == "neg":
            return f"-{args[0]}"
        if node.op == "pow":
            c = node.value
            if c == 4:
                return f"({args[0]} * {args[0]}) * ({args[0]} * {args[0]})"
            if c == int(c) and 2 <= c <= 3:
                return " * ".join([args[0]] * int(c))
            if c == int(c) and -4 <= c <= -1:
                return "ONE / (" + " * ".join([args[0]] * int(-c)) + ")"
            return f"{args[0]} ** {constant(c)}"
        return f"{_MATH_NAMES[node.op]}({', '.join(args)})"

    for _, root in outputs:  # iterative post-order: deep graphs stay off Python's stack
        stack = [(root, False)]
        while stack:
            cur, ready = stack.pop()
            if id(cur) in names:
                continue
            sub = replace.get(id(cur))
            if sub is not None:  # emit the lowered form under this node's name
                if id(sub) in names:
                    names[id(cur)] = names[id(sub)]
                else:
                    stack += [(cur, False), (sub, False)]
                continue
            if cur.op == "var":
                names[id(cur)] = cur.name
            elif cur.op == "const":
                names[id(cur)] = constant(cur.value)
            elif not ready:
                stack.append((cur, True))
                stack.extend((a, False) for a in cur.args if id(a) not in names)
            else:
                local = f"{prefix}{len(lines)}"
                lines.append(f"{indent}{local} = "
                             f"{expression(cur, [names[id(a)] for a in cur.args])}")
                names[id(cur)] = local
    lines += [f"{indent}{target} = {names[id(node)]}" for target, node in outputs]
    return lines, consts


def share_reciprocals(graph: Graph, roots: Sequence[Expr],
                      replace: dict[int, Expr]) -> dict[int, Expr]:
    """Lowerings that divide once by what a step divides by twice or more.

    1. ``a / b -> a * (1 / b)`` for every denominator ``b`` of two or more divisions. A
       forward-mode step divides by each rate sum twice (the steady state, then its
       derivative): one division and two multiplies in place of two divisions.
    2. ``vtrap_e(x, y, e)`` with a ``vtrap_dx`` of the same ``vtrap`` becomes
       ``vtrap_er(x, y, r)`` and ``vtrap_dxr(x, y, value, r)`` around one reciprocal
       ``r = vtrap_r(x, y, e) = 1 / (e - 1)``: ``x / (e - 1)`` and the derivative's
       ``value / x`` are the same ``1 / (e - 1)`` (two divisions become one).

    ``replace`` (already-lowered nodes, followed as :func:`emit` follows them) is read, not
    changed. Returns ``{id(node): node}`` to add to it.
    """
    nodes = _reachable(roots, replace)
    out: dict[int, Expr] = {}
    for node in nodes:
        if node.op != "vtrap_dx":
            continue
        x, y, value = node.args
        low = replace.get(id(value))
        if low is not None and low.op == "vtrap_e" and low.args[:2] == (x, y):
            r = graph._node("vtrap_r", x, y, low.args[2])
            out[id(value)] = graph._node("vtrap_er", x, y, r)
            out[id(node)] = graph._node("vtrap_dxr", x, y, value, r)
    divs = [n for n in nodes if n.op == "div" and n.args[1].op != "const"]
    uses: dict[int, int] = {}
    for d in divs:
        uses[id(d.args[1])] = uses.get(id(d.args[1]), 0) + 1
    one = graph.const(1.0)
    for d in divs:
        a, b = d.args
        if uses[id(b)] >= 2 and not graph._is(a, 1.0):
            out[id(d)] = graph.mul(a, graph.div(one, b))
    return out


#: Largest ``|intercept difference|`` for which ``exp(s v + b)`` is computed from another
#: ``exp(s' v + b')`` (:func:`share_exponentials`): the two overflow at potentials at most
#: this far apart in exponent units (for a slope of 1/10 mV, 300 mV), far outside any cell.
SHARE_EXP_MAX_SHIFT = 30.0
#: Largest integer ratio of slopes that shares one exponential (``E^k``, k multiplies).
SHARE_EXP_MAX_POWER = 4


def _affine(node: Expr, memo: dict[int, Any]) -> tuple[Expr | None, float, float] | None:
    """``(var, slope, intercept)`` if ``node`` is affine in one variable, else ``None``."""
    if id(node) in memo:
        return memo[id(node)]
    out: tuple[Expr | None, float, float] | None = None
    op = node.op
    if op == "const":
        out = (None, 0.0, node.value)
    elif op == "var":
        out = (node, 1.0, 0.0)
    elif op in ("neg", "add", "sub", "mul", "div"):
        parts = [_affine(a, memo) for a in node.args]
        if all(p is not None for p in parts):
            if op == "neg":
                x, sl, b = parts[0]
                out = (x, -sl, -b)
            elif op in ("add", "sub"):
                (x1, s1, b1), (x2, s2, b2) = parts
                sign = 1.0 if op == "add" else -1.0
                if x1 is None or x2 is None or x1 is x2:
                    out = (x1 if x1 is not None else x2, s1 + sign * s2, b1 + sign * b2)
            elif op == "mul":
                (x1, s1, b1), (x2, s2, b2) = parts
                if x1 is None:
                    out = (x2, b1 * s2, b1 * b2)
                elif x2 is None:
                    out = (x1, b2 * s1, b2 * b1)
            elif parts[1][0] is None and parts[1][2] != 0.0:  # div by a constant
                x, sl, b = parts[0]
                out = (x, sl / parts[1][2], b / parts[1][2])
    memo[id(node)] = out
    return out


def _reachable(roots: Sequence[Expr], replace: dict[int, Expr]) -> list[Expr]:
    seen: set[int] = set()
    order: list[Expr] = []
    stack = list(roots)
    while stack:
        node = replace.get(id(stack[-1]), stack[-1])
        stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        stack.extend(node.args)
    return order


def share_exponentials(graph: Graph, roots: Sequence[Expr]) -> dict[int, Expr]:
    """Replacements that compute the graph's exponentials with fewer ``exp`` calls.

    1. ``vtrap(x, y)`` with a constant ``y`` becomes ``vtrap_e(x, y, exp(x / y))``, its
       exponential a node of its own (``VTRAP_E`` is the same function given ``e^(x/y)``).
    2. Exponentials of affine functions of one variable, ``exp(s v + b)``, are grouped by
       variable; the one of smallest ``|s|`` in a group is computed, and one whose slope is
       ``k s`` (``k`` an integer up to :data:`SHARE_EXP_MAX_POWER`) becomes
       ``exp(s v + b0)^k exp(b - k b0)`` when ``|b - k b0| <= SHARE_EXP_MAX_SHIFT``.

    HH's six rate exponentials (and the two in its ``vtrap`` rates) at slopes 1/10, 1/18,
    1/20 and 1/80 per mV take three ``exp`` calls instead of six: ``e^(-(v+40)/10)`` serves
    ``alpha_m``, ``beta_h`` and ``alpha_n`` (times constants) and ``e^(-(v+65)/80)`` serves
    ``beta_n`` and, to the fourth power, ``alpha_h``. Each shared value carries the rounding
    of its base (float32: about 4 ulp for a fourth power). Returns ``{id(node): node}``.
    """
    replace: dict[int, Expr] = {}
    for node in _reachable(roots, replace):
        if node.op == "vtrap" and node.args[1].op == "const" and node.args[1].value != 0.0:
            x, y = node.args
            replace[id(node)] = graph._node("vtrap_e", x, y, graph.exp(graph.div(x, y)))
    memo: dict[int, Any] = {}
    groups: dict[int, list[tuple[float, float, Expr]]] = {}
    for node in _reachable(roots, replace):
        if node.op != "exp":
            continue
        aff = _affine(node.args[0], memo)
        if aff is not None and aff[0] is not None and aff[1] != 0.0:
            groups.setdefault(id(aff[0]), []).append((aff[1], aff[2], node))
    for members in groups.values():
        members.sort(key=lambda m: (abs(m[0]), m[1]))
        bases: list[tuple[float, float, Expr]] = []
        for slope, intercept, node in members:
            for s0, b0, base in bases:
                k = slope / s0
                if (abs(k - round(k)) < 1e-12 and 1 <= round(k) <= SHARE_EXP_MAX_POWER
                        and abs(intercept - round(k) * b0) <= SHARE_EXP_MAX_SHIFT):
                    k = round(k)
                    shift = intercept - k * b0
                    replace[id(node)] = graph.mul(graph.pow(base, float(k)),
                                                  graph.const(math.exp(shift)))
                    break
            else:
                bases.append((slope, intercept, node))
    return replace


def vtrap_e(x: Any, y: Any, e: Any, where: Callable[..., Any],
            absolute: Callable[[Any], Any]) -> Any:
    """``vtrap(x, y)`` given ``e = exp(x / y)``: the same series below the same cut-off."""
    u = x / y
    small = absolute(u) < VTRAP_SERIES_BELOW
    series = vtrap_series(u, y)
    denom = where(small, u * 0.0 + 1.0, e - 1.0)
    return where(small, series, x / denom)


def vtrap_r(x: Any, y: Any, e: Any, where: Callable[..., Any],
            absolute: Callable[[Any], Any]) -> Any:
    """``1 / (e - 1)`` with ``e = exp(x / y)``; 1 where ``vtrap`` uses its series."""
    u = x * (1.0 / y)
    return 1.0 / where(absolute(u) < VTRAP_SERIES_BELOW, u * 0.0 + 1.0, e - 1.0)


def vtrap_er(x: Any, y: Any, r: Any, where: Callable[..., Any],
             absolute: Callable[[Any], Any]) -> Any:
    """``vtrap(x, y)`` given ``r = vtrap_r(x, y, e)``: ``x r``, or the same series."""
    u = x * (1.0 / y)
    series = vtrap_series(u, y)
    return where(absolute(u) < VTRAP_SERIES_BELOW, series, x * r)


def vtrap_dxr(x: Any, y: Any, value: Any, r: Any, where: Callable[..., Any],
              absolute: Callable[[Any], Any]) -> Any:
    """:func:`vtrap_dx` given ``r = 1 / (e - 1)``: ``value / x = r``, so no division.

    ``B'(u) = value (y - value - x) / (x y) = r (y - value - x) / y``.
    """
    u = x * (1.0 / y)
    series = vtrap_dx_series(u)
    return where(absolute(u) < VTRAP_SERIES_BELOW, series, (y - value - x) * r * (1.0 / y))


# ------------------------------------------------------------------------- the traced step


def _symbolic_math(graph: Graph) -> dict[str, Callable[..., Any]]:
    def wrap(x: Any) -> Expr:
        return x if isinstance(x, Expr) else graph.const(x)

    return {"exp": lambda x: graph.exp(wrap(x)), "log": lambda x: graph.log(wrap(x)),
            "sqrt": lambda x: graph.sqrt(wrap(x)),
            "vtrap": lambda x, y: graph.vtrap(wrap(x), wrap(y))}


def _trace(graph: Graph, fn: Callable[..., Any], args: list[Expr], owner: str,
           seen: dict[int, Any]) -> Expr:
    rebuilt = compile_channel_function(fn, _symbolic_math(graph), float, lambda f: f, seen)
    try:
        out = rebuilt(*args)
    except TypeError as err:
        raise UntraceableChannelError(
            f"forward-mode sensitivities and the compiled adjoint cannot trace "
            f"{owner}.{fn.__name__}: {err}") from None
    return out if isinstance(out, Expr) else graph.const(out)


def wrt_directions(cs: ChannelSet, wrt: Sequence[str]) -> list[tuple[str, Arg | None]]:
    """``wrt`` names resolved to parameter rows (``Arg("param", row)``), ``None`` for i_ext.

    Raises :class:`InputError` on unknown or repeated names.
    """
    out: list[tuple[str, Arg | None]] = []
    for name in wrt:
        if not isinstance(name, str):
            raise InputError(f"wrt must list parameter names or 'i_ext', got {name!r}")
        if any(name == seen for seen, _ in out):
            raise InputError(f"wrt names {name!r} twice")
        if name == "i_ext":
            out.append((name, None))
        elif name in cs.param_names:
            out.append((name, Arg("param", cs.param_index(name))))
        else:
            raise InputError(f"wrt: {name!r} is neither a parameter of {cs!r} "
                             f"({', '.join(cs.param_names)}) nor 'i_ext'")
    return out


class TracedStep(NamedTuple):
    """One step of the ion scheme as an expression graph: inputs and outputs.

    ``g_sum`` and ``ge_sum`` are the conductance sums at the new states, from which the
    single-compartment ``v_new`` is computed (a cable solves for it across compartments).
    """

    graph: Graph
    v: Expr
    states: list[Expr]
    params: list[Expr]
    i_inj: Expr
    v_new: Expr
    new_states: list[Expr]
    g_sum: Expr
    ge_sum: Expr
    dt: Expr


def trace_step(cs: ChannelSet) -> TracedStep:
    """The graph of one step (gates, conductances, voltage) for channel set ``cs``.

    The scheme of :func:`fusekit.ops.ion_channel.step_source`; the variables are named as
    the generated kernels name their locals (``v``, ``s<k>``, ``p<i>``, ``i_inj``, ``dt``).
    """
    g = Graph()
    v, i_inj, dt = g.var("v"), g.var("i_inj"), g.var("dt")
    S = [g.var(f"s{k}") for k in range(len(cs.state_names))]
    P = [g.var(f"p{i}") for i in range(len(cs.param_names))]
    seen: dict[int, Any] = {}

    def args_of(ch: Any, fn: Callable[..., Any], states: list[Expr]) -> list[Expr]:
        return [v if a.kind == "v" else (states if a.kind == "state" else P)[a.index]
                for a in cs.arg_sources(ch, fn)]

    new_states: list[Expr] = []
    k = 0
    for ch in cs.channels:
        for gate in ch.gates:
            first = _trace(g, gate.first, args_of(ch, gate.first, S), ch.__name__, seen)
            second = _trace(g, gate.second, args_of(ch, gate.second, S), ch.__name__, seen)
            if gate.form == "rates":
                ab = first + second
                inf, decay = first / ab, g.exp(-(dt * ab))
            else:
                inf, decay = first, g.exp(-(dt / second))
            new_states.append(inf + (S[k] - inf) * decay)
            k += 1
    g_sum: Expr = g.const(0.0)
    ge_sum: Expr = g.const(0.0)
    for ch in cs.channels:
        cond = _trace(g, ch.conductance_fn, args_of(ch, ch.conductance_fn, new_states),
                      ch.__name__, seen)
        rev = cs.reversal_source(ch)
        g_sum = g_sum + cond
        ge_sum = ge_sum + cond * (P[rev.index] if isinstance(rev, Arg) else rev)
    k_ = dt / P[0]
    v_new = (v + k_ * (ge_sum + i_inj)) / (1.0 + k_ * g_sum)
    return TracedStep(g, v, S, P, i_inj, v_new, new_states, g_sum, ge_sum, dt)


def value_step_source(cs: ChannelSet, indent: str, *, share_exp: bool = True,
                      prefix: str = "t", const_prefix: str = "K"
                      ) -> tuple[list[str], dict[str, float]]:
    """Lines of one step of one neuron from the traced graph (no channel function calls).

    Reads and assigns the locals of :func:`fusekit.ops.ion_channel.step_source` (``v``,
    ``s<k>``; reads ``p<i>``, ``i_inj``, ``dt``); with ``share_exp`` (default) the
    exponentials are shared (:func:`share_exponentials`). ``prefix`` and ``const_prefix``
    name the locals and constants (as for :func:`emit`), so that two blocks can share a
    kernel.
    """
    st = trace_step(cs)
    outputs: list[tuple[str, Expr]] = [("v_n", st.v_new)]
    outputs += [(f"s{k}_n", s) for k, s in enumerate(st.new_states)]
    lines, consts = emit(outputs, indent, prefix, share_exp=share_exp,
                         const_prefix=const_prefix)
    lines += [f"{indent}v = v_n"] + [f"{indent}s{k} = s{k}_n" for k in range(len(st.states))]
    return lines, consts


def cable_value_step_source(cs: ChannelSet, indent: str, *, prefix: str = "t",
                            const_prefix: str = "K") -> tuple[list[str], dict[str, float]]:
    """A cable compartment's half of a step from the traced graph, exponentials shared.

    Reads ``v``, ``s<k>``, ``p<i>``, ``dt`` and assigns the new states ``s<k>_n`` and the
    conductance sums ``g_sum`` and ``ge_sum`` at them (the caller builds the Hines row).
    """
    st = trace_step(cs)
    outputs = [(f"s{k}_n", s) for k, s in enumerate(st.new_states)]
    outputs += [("g_sum", st.g_sum), ("ge_sum", st.ge_sum)]
    return emit(outputs, indent, prefix, share_exp=True, const_prefix=const_prefix)


_traceable: dict[str, bool] = {}


def is_traceable(cs: ChannelSet) -> bool:
    """Whether ``cs``'s channel functions can be traced (cached per channel set key)."""
    if cs.key not in _traceable:
        try:
            trace_step(cs)
            _traceable[cs.key] = True
        except UntraceableChannelError:
            _traceable[cs.key] = False
    return _traceable[cs.key]


def tangent_step_source(cs: ChannelSet, wrt: Sequence[str], indent: str, *,
                        share_exp: bool = False, share_recip: bool = False
                        ) -> tuple[list[str], dict[str, float]]:
    """Lines of one step of one neuron with its tangents in the directions ``wrt``.

    The lines read locals ``v``, ``s<k>``, ``p<i>``, ``i_inj``, ``dt`` and the tangents
    ``dv_<j>``, ``ds<k>_<j>`` (``d/d theta_j`` of ``v`` and state ``k``), and assign ``v``,
    ``s<k>``, ``dv_<j>`` and ``ds<k>_<j>`` after the step (the scheme of
    :func:`fusekit.ops.ion_channel.step_source`). Returns the lines and their constants.
    """
    directions = wrt_directions(cs, wrt)
    st = trace_step(cs)
    g, v, S, P = st.graph, st.v, st.states, st.params
    n_states = len(S)
    zero = g.const(0.0)
    outputs: list[tuple[str, Expr]] = [("v_n", st.v_new)]
    outputs += [(f"s{k}_n", s) for k, s in enumerate(st.new_states)]
    # Jacobians by reverse sweeps, shared by every direction: each new state's row, then
    # v_new's partials with the new states held as inputs (v_new reads them).
    one = g.const(1.0)
    rows = [g.adjoints([(s, one)]) for s in st.new_states]
    v_row = g.adjoints([(st.v_new, one)], stop=st.new_states)

    def chain(row: dict[int, Expr], theta: Expr, pairs: list[tuple[Expr, Expr]]) -> Expr:
        total = row.get(id(theta), zero)
        for x, t in pairs:
            total = g.add(total, g.mul(row.get(id(x), zero), t))
        return total

    for j, (_, src) in enumerate(directions):
        theta = st.i_inj if src is None else P[src.index]
        t_in = [(v, g.var(f"dv_{j}")), *((s, g.var(f"ds{k}_{j}")) for k, s in enumerate(S))]
        ds_new = [chain(row, theta, t_in) for row in rows]
        dv_new = chain(v_row, theta, t_in + list(zip(st.new_states, ds_new, strict=True)))
        outputs.append((f"dv_{j}_n", dv_new))
        outputs += [(f"ds{k}_{j}_n", ds_new[k]) for k in range(n_states)]
    lines, consts = emit(outputs, indent, share_exp=share_exp, share_recip=share_recip)
    lines += [f"{indent}v = v_n"] + [f"{indent}s{k} = s{k}_n" for k in range(n_states)]
    for j in range(len(directions)):
        lines.append(f"{indent}dv_{j} = dv_{j}_n")
        lines += [f"{indent}ds{k}_{j} = ds{k}_{j}_n" for k in range(n_states)]
    return lines, consts


def _vjp_lines(st: TracedStep, outs: Sequence[Expr], adj: Sequence[Expr], indent: str,
               share_exp: bool) -> tuple[list[str], dict[str, float], list[int]]:
    """The vector-Jacobian lines of a traced step for outputs ``outs`` with adjoints ``adj``.

    They assign ``av``, ``as<k>``, ``ap<i>`` (the rows returned) and ``ai``:
    ``a_x = sum_o (d o / d x) a_o``.
    """
    g = st.graph
    adjoint = g.adjoints(list(zip(outs, adj, strict=True)))

    def vjp(x: Expr) -> Expr:
        return adjoint.get(id(x), g.const(0.0))

    outputs: list[tuple[str, Expr]] = [("av", vjp(st.v))]
    outputs += [(f"as{k}", vjp(s)) for k, s in enumerate(st.states)]
    rows = []
    for i, p in enumerate(st.params):
        total = vjp(p)
        if not (total.op == "const" and total.value == 0.0):
            rows.append(i)
            outputs.append((f"ap{i}", total))
    outputs.append(("ai", vjp(st.i_inj)))
    lines, consts = emit(outputs, indent, share_exp=share_exp)
    return lines, consts, rows


def adjoint_step_source(cs: ChannelSet, indent: str, *, share_exp: bool = False
                        ) -> tuple[list[str], dict[str, float], list[int]]:
    """Lines of the reverse (vector-Jacobian) step of one neuron: the adjoint of the step.

    The lines read the state before the step (``v``, ``s<k>``), ``p<i>``, ``i_inj``, ``dt``
    and the adjoints of the state after it, ``av_n`` and ``as<k>_n``; they assign the adjoints
    of the state before it, ``av`` and ``as<k>``, the step's contribution to the adjoint of
    each parameter ``p<i>`` that it reads, ``ap<i>``, and that of ``i_inj``, ``ai``:
    ``a_x = sum_o (d o / d x) a_o`` over the outputs ``o = (v', s')``.

    Returns the lines, their constants and the parameter rows given an ``ap<i>``.
    """
    st = trace_step(cs)
    g = st.graph
    adj = [g.var("av_n"), *(g.var(f"as{k}_n") for k in range(len(st.states)))]
    return _vjp_lines(st, [st.v_new, *st.new_states], adj, indent, share_exp)


def cable_adjoint_step_source(cs: ChannelSet, indent: str, *, share_exp: bool = False
                              ) -> tuple[list[str], dict[str, float], list[int]]:
    """The local half of a cable compartment's adjoint step (``cable_simulate``'s scheme).

    A compartment's step gives its new states and its row of the Hines system,
    ``D = c_m / dt + g_sum`` (plus the axial conductances, constants) and
    ``R = c_m / dt v + ge_sum + i_inj``. Given the adjoints ``as<k>_n`` of the new states and
    ``a_d``, ``a_r`` of ``D`` and ``R`` (from the transposed tree solve), the lines assign
    ``av``, ``as<k>``, ``ap<i>`` and ``ai`` as :func:`adjoint_step_source` does.
    """
    st = trace_step(cs)
    g = st.graph
    c_dt = st.params[0] / st.dt
    outs = [c_dt + st.g_sum, c_dt * st.v + st.ge_sum + st.i_inj, *st.new_states]
    adj = [g.var("a_d"), g.var("a_r"), *(g.var(f"as{k}_n") for k in range(len(st.states)))]
    return _vjp_lines(st, outs, adj, indent, share_exp)


def unless_junction_adjoint(lines: list[str], rows: Sequence[int], n_states: int,
                            indent: str) -> list[str]:
    """:func:`cable_adjoint_step_source`'s ``lines`` where ``c_m != 0``, a junction's else.

    At ``p0 == ZERO`` (a zero-area junction: ``ion_channel.unless_junction_lines``) the row is
    ``D = c_m / dt + axial``, ``R = c_m / dt v + i_inj`` and the states are held, so ``av =
    c_m / dt a_r``, ``as<k> = as<k>_n``, ``ap0 = (a_d + a_r v) / dt``, every other ``ap<i>``
    is ``ZERO`` and ``ai = a_r``. For the kernels that take one compartment at a time.
    """
    return [f"{indent}if p0 != ZERO:", *("    " + line for line in lines), f"{indent}else:",
            *(f"{indent}    {line}" for line in junction_adjoint_lines(rows, n_states))]


def junction_adjoint_lines(rows: Sequence[int], n_states: int) -> list[str]:
    """A junction's local adjoint, the else of :func:`unless_junction_adjoint`.

    It assigns the names :func:`cable_adjoint_step_source`'s lines do, from ``v``, ``p0``,
    ``dt``, ``a_d``, ``a_r`` and ``as<k>_n``.
    """
    return ["av = p0 / dt * a_r", *(f"as{k} = as{k}_n" for k in range(n_states)),
            *(f"ap{i} = " + ("(a_d + a_r * v) / dt" if i == 0 else "ZERO") for i in rows),
            "ai = a_r"]

