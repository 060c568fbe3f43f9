"""JSON schema -> a small typed tree, the subset llama.cpp's grammar converter understands.

Port of llama.cpp's common/json-schema.cpp (common_chat_schema_from_json): keywords are
read in the same precedence order ($ref, oneOf/anyOf, type arrays, const, enum, then by
type), so the grammar built from the tree matches llama.cpp's rule for rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pyllama.errors import InvalidRequestError


class SchemaError(InvalidRequestError):
    """The schema is outside what the converter supports, or malformed."""


@dataclass
class Node:
    kind: str  # any ref anyOf allOf const enum null boolean number integer string array tuple object


@dataclass
class AnyNode(Node):
    kind: str = "any"


@dataclass
class RefNode(Node):
    ref: str = ""
    target: Node | None = None
    kind: str = "ref"


@dataclass
class AlternativesNode(Node):  # anyOf / allOf
    children: list[Node] = field(default_factory=list)


@dataclass
class ConstNode(Node):
    value: Any = None
    kind: str = "const"


@dataclass
class EnumNode(Node):
    values: list[Any] = field(default_factory=list)
    kind: str = "enum"


@dataclass
class IntegerNode(Node):
    minimum: int | None = None  # None: unbounded
    maximum: int | None = None
    kind: str = "integer"


@dataclass
class StringNode(Node):
    pattern: str = ""
    format: str = ""  # "", uuid, date, time, date-time
    min_length: int = 0
    max_length: int = -1
    kind: str = "string"


@dataclass
class ArrayNode(Node):
    items: Node = field(default_factory=AnyNode)
    min_items: int = 0
    max_items: int = -1
    kind: str = "array"


@dataclass
class TupleNode(Node):
    items: list[Node] = field(default_factory=list)
    kind: str = "tuple"


@dataclass
class Property:
    name: str
    schema: Node
    required: bool


@dataclass
class ObjectNode(Node):
    properties: list[Property] = field(default_factory=list)
    additional: Node | None = None  # None: no additional properties allowed
    kind: str = "object"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool)


MAX_REF_DEPTH = 64  # a $ref whose target holds a $ref ...: resolved recursively


class _Builder:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.refs: dict[str, Node | None] = {}
        self.pending: list[RefNode] = []
        self.ref_depth = 0  # $refs being resolved inside each other (each one recurses)

    @staticmethod
    def fail(path: str, msg: str) -> NoReturn:
        raise SchemaError(f"JSON schema error at {path}: {msg}")

    def count(self, schema: dict[str, Any], key: str, path: str, default: int) -> int:
        if key not in schema:
            return default
        value = schema[key]
        if not _is_int(value) or value < 0:
            self.fail(path, f"{key} must be a non-negative integer")
        return int(value)

    def bound(self, schema: dict[str, Any], key: str, path: str, round_up: bool) -> int:
        value = schema[key]
        if _is_int(value):
            return int(value)
        if not _is_number(value):
            self.fail(path, f"{key} must be a number")
        return int(math.ceil(value) if round_up else math.floor(value))

    def format(self, schema: dict[str, Any], path: str) -> str:
        if "format" not in schema:
            return ""
        value = schema["format"]
        if not isinstance(value, str):
            self.fail(path, "format must be a string")
        if value in ("date", "time", "date-time"):
            return str(value)
        if value == "uuid" or (len(value) == 5 and value.startswith("uuid") and "1" <= value[4] <= "5"):
            return "uuid"
        return ""

    def resolve(self, ref: str, path: str) -> Any:
        target = self.root
        for sel in ref[1:].split("/")[1:]:
            if isinstance(target, dict) and sel in target:
                target = target[sel]
            elif isinstance(target, list):
                idx = int(sel) if sel.isdigit() else len(target)
                if idx >= len(target):
                    self.fail(path, f"cannot resolve $ref {ref}, {sel} is out of range")
                target = target[idx]
            else:
                self.fail(path, f"cannot resolve $ref {ref}, {sel} not found")
        return target

    def ref(self, value: Any, path: str) -> Node:
        if not isinstance(value, str):
            self.fail(path, "$ref must be a string")
        if not value.startswith("#/"):
            self.fail(path, f"unsupported $ref {value}, only references into the same document are supported")
        if value not in self.refs:
            self.refs[value] = None  # reserved first: a cycle back to this $ref stops here
            if self.ref_depth >= MAX_REF_DEPTH:
                self.fail(path, f"$ref chain deeper than {MAX_REF_DEPTH} references (schema nesting limit)")
            self.ref_depth += 1
            self.refs[value] = self.node(self.resolve(value, path), value)
            self.ref_depth -= 1
        node = RefNode(ref=value)
        self.pending.append(node)
        return node

    def alternatives(self, alts: Any, path: str, kind: str) -> Node:
        if not isinstance(alts, list):
            self.fail(path, "must be an array of schemas")
        if not alts:
            self.fail(path, "must not be empty")
        return AlternativesNode(kind, [self.node(a, f"{path}/{i}") for i, a in enumerate(alts)])

    def obj(self, schema: dict[str, Any], path: str) -> Node:
        node = ObjectNode()
        required: set[str] = set()
        if isinstance(schema.get("required"), list):
            required = {r for r in schema["required"] if isinstance(r, str)}
        if "properties" in schema:
            props = schema["properties"]
            if not isinstance(props, dict):
                self.fail(path, "properties must be an object")
            for name, prop in props.items():
                node.properties.append(Property(name, self.node(prop, f"{path}/properties/{name}"), name in required))
        if "additionalProperties" in schema:
            extra = schema["additionalProperties"]
            if isinstance(extra, bool):
                node.additional = AnyNode() if extra else None
            elif isinstance(extra, dict):
                node.additional = self.node(extra, f"{path}/additionalProperties")
            else:
                self.fail(path, "additionalProperties must be a boolean or a schema")
        elif "properties" not in schema:
            node.additional = AnyNode()  # {"type": "object"} alone accepts any object
        return node

    def array(self, schema: dict[str, Any], path: str) -> Node:
        node = ArrayNode()
        if "items" in schema or "prefixItems" in schema:
            key = "items" if "items" in schema else "prefixItems"
            items = schema[key]
            if isinstance(items, list):
                return TupleNode(items=[self.node(it, f"{path}/{key}/{i}") for i, it in enumerate(items)])
            node.items = self.node(items, f"{path}/{key}")
        node.min_items = self.count(schema, "minItems", path, 0)
        node.max_items = self.count(schema, "maxItems", path, -1)
        return node

    def string(self, schema: dict[str, Any], path: str) -> Node:
        node = StringNode()
        if "pattern" in schema:
            if not isinstance(schema["pattern"], str):
                self.fail(path, "pattern must be a string")
            node.pattern = schema["pattern"]
        node.format = self.format(schema, path)
        node.min_length = self.count(schema, "minLength", path, 0)
        node.max_length = self.count(schema, "maxLength", path, -1)
        return node

    def integer(self, schema: dict[str, Any], path: str) -> Node:
        node = IntegerNode()
        if "minimum" in schema:
            node.minimum = self.bound(schema, "minimum", path, True)
        elif "exclusiveMinimum" in schema:
            node.minimum = self.bound(schema, "exclusiveMinimum", path, False) + 1
        if "maximum" in schema:
            node.maximum = self.bound(schema, "maximum", path, False)
        elif "exclusiveMaximum" in schema:
            node.maximum = self.bound(schema, "exclusiveMaximum", path, True) - 1
        return node

    def node(self, schema: Any, path: str) -> Node:
        if not isinstance(schema, dict):
            self.fail(path, "schema must be an object")
        if "$ref" in schema:
            return self.ref(schema["$ref"], path)
        if "oneOf" in schema or "anyOf" in schema:
            key = "oneOf" if "oneOf" in schema else "anyOf"
            return self.alternatives(schema[key], f"{path}/{key}", "anyOf")
        typ = schema.get("type")
        if isinstance(typ, list):
            if not typ:
                self.fail(path, "type must not be empty")
            return AlternativesNode(
                "anyOf", [self.node({**schema, "type": t}, f"{path}/type/{i}") for i, t in enumerate(typ)]
            )
        if "const" in schema:
            return ConstNode(value=schema["const"])
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                self.fail(path, "enum must be a non-empty array")
            return EnumNode(values=list(values))
        if typ is not None and not isinstance(typ, str):
            self.fail(path, "type must be a string or an array of strings")
        name = typ or ""
        has_properties = "properties" in schema or (
            "additionalProperties" in schema and schema["additionalProperties"] is not True
        )
        if not name:
            if has_properties:
                return self.obj(schema, path)
            if "allOf" in schema:
                return self.alternatives(schema["allOf"], f"{path}/allOf", "allOf")
            if "items" in schema or "prefixItems" in schema:
                return self.array(schema, path)
            if any(k in schema for k in ("pattern", "minLength", "maxLength")) or self.format(schema, path):
                return self.string(schema, path)
            return AnyNode()
        if name == "object":
            if not has_properties and "allOf" in schema:
                return self.alternatives(schema["allOf"], f"{path}/allOf", "allOf")
            return self.obj(schema, path)
        if name == "string":
            if "allOf" in schema:
                return self.alternatives(schema["allOf"], f"{path}/allOf", "allOf")
            return self.string(schema, path)
        if name == "array":
            return self.array(schema, path)
        if name == "integer":
            return self.integer(schema, path)
        if name in ("number", "boolean", "null"):
            return Node(name)
        self.fail(path, f"unrecognized type {name}")


def schema_tree(schema: Any) -> Node:
    """Build the tree; every $ref node gets its resolved target."""
    builder = _Builder(schema)
    root = builder.node(schema, "#")
    for ref in builder.pending:
        ref.target = builder.refs[ref.ref]
    return root
