"""Parse the Python `repr` of a dict that a trainer printed, without evaluating anything.

`ast.literal_eval` refuses what trainers really print: `nan`, `inf`, `np.float64(0.5)`
(numpy >= 2 reprs), `tensor(0.12, device='cuda:0')`. This walks the parsed expression and
accepts exactly: dicts, lists, tuples, constants, unary minus, the names nan/inf, and a
call of a plain dotted name whose first argument is a literal (the wrapper is dropped:
`np.float32(0.5)` -> 0.5).
Anything else is an error: nothing is ever executed.
"""

from __future__ import annotations

import ast
import math

_NAMES = {"nan": math.nan, "inf": math.inf, "NaN": math.nan, "Infinity": math.inf,
          "True": True, "False": False, "None": None}


class NotALiteral(ValueError):
    pass


def parse_literal(text: str):
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError) as e:
        raise NotALiteral(f"not a Python literal ({e.__class__.__name__})") from None
    return _value(tree.body)


def _value(node):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Dict):
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _value(node.operand)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
        raise NotALiteral("unary sign on a non-number")
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.Attribute) and node.attr in _NAMES:  # np.nan, math.inf
        return _NAMES[node.attr]
    if isinstance(node, ast.Call) and node.args and _dotted_name(node.func):  # np.float64(0.5), tensor(0.5, ...)
        return _value(node.args[0])
    raise NotALiteral(f"unsupported expression {type(node).__name__}")


def _dotted_name(node) -> bool:
    """`tensor`, `np.float64`, `torch.tensor`: a plain (dotted) name, not an expression."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)
