"""JSON schema -> GBNF, rule for rule as llama.cpp's json_schema_to_grammar.

Port of the converter class in common/json-schema-to-grammar.cpp (the schema is first
read into a tree by schema_model.py). Rules are kept in a name-sorted map and printed
one per line, so the output text equals llama.cpp's and its test expectations apply
verbatim. Also the `response_format` helpers llama-server applies to chat requests.
"""

from __future__ import annotations

import re
from typing import Any

from pyllama.grammar.schema_model import (
    AlternativesNode,
    ArrayNode,
    ConstNode,
    EnumNode,
    IntegerNode,
    Node,
    ObjectNode,
    RefNode,
    SchemaError,
    StringNode,
    TupleNode,
    schema_tree,
)
from pyllama.grammar.schema_rules import (
    INT_MAX,
    PRIMITIVE_RULES,
    RESERVED_NAMES,
    SPACE_RULE,
    STRING_FORMAT_RULES,
    build_min_max_int,
    build_repetition,
    format_literal,
    json_dump,
)

_INVALID_RULE_CHARS = re.compile(r"[^a-zA-Z0-9-]+")
MAX_OPTIONAL_PROPERTIES = 256
"""Optional properties per object: each one adds an alternative that the grammar matcher
tracks at every token, so thousands of them would slow every step of the model thread."""


class _Unsupported(Exception):
    """A valid regex with no grammar equivalent: the string is left unconstrained."""


class _Invalid(Exception):
    """Not a valid regex: the conversion fails."""


class SchemaConverter:
    def __init__(self, dotall: bool = False) -> None:
        self.dotall = dotall
        self.rules: dict[str, str] = {"space": SPACE_RULE}
        self.refs_being_resolved: set[str] = set()
        self.errors: list[str] = []
        self.warnings: list[str] = []

    # -- rule table ------------------------------------------------------------------------
    def add_rule(self, name: str, rule: str) -> str:
        esc = _INVALID_RULE_CHARS.sub("-", name)
        if esc not in self.rules or self.rules[esc] == rule:
            self.rules[esc] = rule
            return esc
        i = 0
        while f"{esc}{i}" in self.rules and self.rules[f"{esc}{i}"] != rule:
            i += 1
        key = f"{esc}{i}"
        self.rules[key] = rule
        return key

    def add_primitive(self, name: str, rule: tuple[str, tuple[str, ...]]) -> str:
        n = self.add_rule(name, rule[0])
        for dep in rule[1]:
            dep_rule = PRIMITIVE_RULES.get(dep) or STRING_FORMAT_RULES.get(dep)
            if dep_rule is None:
                self.errors.append(f"Rule {dep} not known")
                continue
            if dep not in self.rules:
                self.add_primitive(dep, dep_rule)
        return n

    def format_grammar(self) -> str:
        return "".join(f"{name} ::= {rule}\n" for name, rule in sorted(self.rules.items()))

    # -- visiting ----------------------------------------------------------------------
    def visit(self, schema: Node, name: str) -> str:
        rule_name = name + "-" if name in RESERVED_NAMES else (name or "root")
        sub_name = name + ("-" if name else "")
        kind = schema.kind
        if isinstance(schema, RefNode):
            return self.add_rule(rule_name, self._resolve_ref(schema))
        if isinstance(schema, AlternativesNode) and kind == "anyOf":
            alts = [self.visit(alt, name + ("-" if name else "alternative-") + str(i)) for i, alt in enumerate(schema.children)]
            return self.add_rule(rule_name, " | ".join(alts))
        if isinstance(schema, AlternativesNode):
            return self._visit_all_of(schema, name, rule_name)
        if isinstance(schema, ConstNode):
            return self.add_rule(rule_name, format_literal(json_dump(schema.value)))
        if isinstance(schema, EnumNode):
            return self.add_rule(rule_name, "(" + " | ".join(format_literal(json_dump(v)) for v in schema.values) + ")")
        if isinstance(schema, ObjectNode):
            if not schema.properties and schema.additional is not None and schema.additional.kind == "any":
                return self.add_rule(rule_name, self.add_primitive("object", PRIMITIVE_RULES["object"]))
            props = [(p.name, p.schema) for p in schema.properties]
            required = {p.name for p in schema.properties if p.required}
            return self.add_rule(rule_name, self._object_rule(props, required, name, schema.additional))
        if isinstance(schema, TupleNode):
            parts = [self.visit(item, f"{sub_name}tuple-{i}") for i, item in enumerate(schema.items)]
            return self.add_rule(rule_name, '"[" space ' + ' "," space '.join(parts) + ' space "]"')
        if isinstance(schema, ArrayNode):
            if schema.items.kind == "any" and schema.min_items == 0 and schema.max_items < 0:
                return self._primitive(rule_name, "array")
            item = self.visit(schema.items, sub_name + "item")
            max_items = INT_MAX if schema.max_items < 0 else schema.max_items
            body = build_repetition(item, schema.min_items, max_items, '"," space')
            return self.add_rule(rule_name, '"[" space ' + body + ' space "]"')
        if isinstance(schema, StringNode):
            return self._visit_string(schema, rule_name)
        if isinstance(schema, IntegerNode):
            if schema.minimum is None and schema.maximum is None:
                return self._primitive(rule_name, "integer")
            out: list[str] = ["("]
            build_min_max_int(schema.minimum, schema.maximum, out)
            out.append(")")
            return self.add_rule(rule_name, "".join(out))
        if kind in ("number", "boolean", "null"):
            return self._primitive(rule_name, kind)
        return self.add_rule(rule_name, self.add_primitive("value", PRIMITIVE_RULES["value"]))  # any

    def _primitive(self, rule_name: str, typ: str) -> str:
        return self.add_primitive("root" if rule_name == "root" else typ, PRIMITIVE_RULES[typ])

    def _visit_string(self, schema: StringNode, rule_name: str) -> str:
        if schema.pattern:
            return self._visit_pattern(schema.pattern, rule_name)
        if schema.format == "uuid":
            return self._primitive(rule_name, "uuid")
        if schema.format:
            prim = schema.format + "-string"
            return self.add_rule(rule_name, self.add_primitive(prim, STRING_FORMAT_RULES[prim]))
        if schema.min_length > 0 or schema.max_length >= 0:
            char = self.add_primitive("char", PRIMITIVE_RULES["char"])
            max_len = INT_MAX if schema.max_length < 0 else schema.max_length
            return self.add_rule(rule_name, '"\\"" ' + build_repetition(char, schema.min_length, max_len) + ' "\\""')
        return self._primitive(rule_name, "string")

    def _resolve_ref(self, schema: RefNode) -> str:
        frag = schema.ref[schema.ref.index("#") + 1 :] if "#" in schema.ref else schema.ref
        ref_name = "ref" + _INVALID_RULE_CHARS.sub("-", frag)
        if ref_name not in self.rules and schema.ref not in self.refs_being_resolved:
            if schema.target is None:
                self.errors.append(f"Unresolved $ref {schema.ref}")
                return ""
            self.refs_being_resolved.add(schema.ref)
            ref_name = self.visit(schema.target, ref_name)
            self.refs_being_resolved.discard(schema.ref)
        return ref_name

    def _visit_all_of(self, schema: AlternativesNode, name: str, rule_name: str) -> str:
        required: set[str] = set()
        props: list[tuple[str, Node]] = []
        enum_counts: dict[str, int] = {}

        def add(comp: Node, is_required: bool) -> None:
            if isinstance(comp, RefNode):
                if comp.target is not None:
                    add(comp.target, is_required)
            elif isinstance(comp, ObjectNode):
                for p in comp.properties:
                    props.append((p.name, p.schema))
                    if is_required:
                        required.add(p.name)
            elif isinstance(comp, EnumNode):
                for v in comp.values:
                    key = format_literal(json_dump(v))
                    enum_counts[key] = enum_counts.get(key, 0) + 1

        for child in schema.children:
            if isinstance(child, AlternativesNode) and child.kind == "anyOf":
                for alt in child.children:
                    add(alt, False)
            else:
                add(child, True)
        if enum_counts:
            common = [k for k in sorted(enum_counts) if enum_counts[k] == len(schema.children)]
            if common:
                return self.add_rule(rule_name, "(" + " | ".join(common) + ")")
        return self.add_rule(rule_name, self._object_rule(props, required, name, None))

    def _object_rule(
        self, props: list[tuple[str, Node]], required: set[str], name: str, additional: Node | None
    ) -> str:
        prefix = name + ("-" if name else "")
        required_props: list[str] = []
        optional_props: list[str] = []
        kv_rules: dict[str, str] = {}
        names: list[str] = []
        for prop_name, prop_schema in props:
            prop_rule = self.visit(prop_schema, prefix + prop_name)
            kv_rules[prop_name] = self.add_rule(
                prefix + prop_name + "-kv", format_literal(json_dump(prop_name)) + ' space ":" space ' + prop_rule
            )
            (required_props if prop_name in required else optional_props).append(prop_name)
            names.append(prop_name)
        if additional is not None:
            sub = prefix + "additional"
            value_rule = (
                self.visit(additional, sub + "-value")
                if additional.kind != "any"
                else self.add_primitive("value", PRIMITIVE_RULES["value"])
            )
            key_rule = (
                self.add_primitive("string", PRIMITIVE_RULES["string"])
                if not names
                else self.add_rule(sub + "-k", self._not_strings(names))
            )
            kv_rules["*"] = self.add_rule(sub + "-kv", key_rule + ' ":" space ' + value_rule)
            optional_props.append("*")
        if len(optional_props) > MAX_OPTIONAL_PROPERTIES:
            raise SchemaError(
                f"JSON schema: an object has {len(optional_props)} optional properties; the limit is "
                f"{MAX_OPTIONAL_PROPERTIES} per object (schema size limit)"
            )
        if not required_props and not optional_props:
            return '"{" space "}"'
        rule = '"{" space ' + ' "," space '.join(kv_rules[k] for k in required_props)
        if optional_props:
            rule += " ("
            if required_props:
                rule += ' "," space ( '

            # llama.cpp builds each alternative by recursion over the remaining properties
            # (O(n^2) work, n frames deep); the "-rest" rules are the same for every
            # alternative, so build them once, last first (llama.cpp's order), and reuse them.
            n_opt = len(optional_props)
            rest = [""] * (n_opt + 1)

            def refs(i: int, first_is_optional: bool) -> str:
                k = optional_props[i]
                kv = kv_rules[k]
                comma_ref = '( "," space ' + kv + " )"
                if first_is_optional:
                    res = comma_ref + ("*" if k == "*" else "?")
                else:
                    res = kv + (" " + comma_ref + "*" if k == "*" else "")
                return res + (" " + rest[i + 1] if i + 1 < n_opt else "")

            for i in range(n_opt - 1, 0, -1):
                rest[i] = self.add_rule(prefix + optional_props[i - 1] + "-rest", refs(i, True))
            rule += " | ".join(refs(i, False) for i in range(n_opt))
            if required_props:
                rule += " )"
            rule += " )?"
        return rule + ' space "}"'

    def _not_strings(self, strings: list[str]) -> str:
        """A JSON string that is none of `strings` (for additionalProperties keys)."""
        trie: dict[str, Any] = {}
        for s in strings:
            node = trie
            for ch in s:
                node = node.setdefault(ch, {})
            node[""] = True  # end marker
        char_rule = self.add_primitive("char", PRIMITIVE_RULES["char"])
        out: list[str] = ['["] ( ']

        def visit(node: dict[str, Any]) -> None:
            children = sorted((c for c in node if c), key=ord)
            for i, c in enumerate(children):
                if i:
                    out.append(" | ")
                out.append(f"[{c}]")
                child = node[c]
                if any(k for k in child):
                    out.append(" (")
                    visit(child)
                    out.append(")")
                else:
                    out.append(f" {char_rule}+")
            if children:
                out.append(f' | [^"{"".join(children)}] {char_rule}*')

        visit(trie)
        out.append(" )")
        if "" not in trie:
            out.append("?")
        out.append(' ["]')
        return "".join(out)

    # -- regular expressions ---------------------------------------------------------------
    def _visit_pattern(self, pattern: str, name: str) -> str:
        snapshot = dict(self.rules)
        try:
            return self._pattern_to_rule(pattern, name)
        except _Unsupported as err:
            self.rules = snapshot
            self.warnings.append(f"pattern {pattern} is not supported ({err}), accepting any string")
            return self.add_rule(name, self.add_primitive("string", PRIMITIVE_RULES["string"]))
        except _Invalid as err:
            self.rules = snapshot
            self.errors.append(f"Invalid pattern {pattern}: {err}")
            return ""

    def _pattern_to_rule(self, pattern: str, name: str) -> str:
        from pyllama.grammar.schema_pattern import PatternTranslator

        if len(pattern) < 2 or pattern[0] != "^" or pattern[-1] != "$":
            raise _Unsupported("not anchored with '^' and '$'")
        translator = PatternTranslator(pattern[1:-1], name, self.add_rule, self._dot_rule, _Unsupported, _Invalid)
        rule = translator.translate()
        return self.add_rule(name, '"\\"" (' + rule + ') "\\""')

    def _dot_rule(self) -> str:
        return self.add_rule("dot", "[\\U00000000-\\U0010FFFF]" if self.dotall else "[^\\x0A\\x0D]")

    def check_errors(self) -> None:
        if self.errors:
            raise SchemaError("JSON schema conversion failed:\n" + "\n".join(self.errors))


def json_schema_to_grammar(schema: Any) -> str:
    """GBNF for documents valid under `schema` (llama.cpp's converter; `{}` means any value)."""
    converter = SchemaConverter()
    converter.visit(schema_tree(schema), "")
    converter.check_errors()
    return converter.format_grammar()

