"""Checks answers against the OpenAI audio spec subset in ../shared/reference (rules written here).

Covers the JSON-Schema keywords that subset uses: $ref, type, properties, required,
additionalProperties, enum, anyOf, oneOf (as at-least-one), items, min/maxItems, maxLength, minimum/maximum.
"""

from __future__ import annotations

import functools
from typing import Any

import yaml
from harness import reference_file

ERROR_FIELDS = ("message", "type", "param", "code")


@functools.cache
def _spec() -> dict[str, Any]:
    return yaml.safe_load(reference_file("openai-audio-openapi.yaml").read_text(encoding="utf-8"))


def schema(name: str) -> dict[str, Any]:
    return _spec()["components"]["schemas"][name]


def response_schema(path: str, method: str, content_type: str) -> dict[str, Any]:
    return _spec()["paths"][path][method]["responses"]["200"]["content"][content_type]["schema"]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = _spec()
        for part in ref[2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def problems(value: Any, node: dict[str, Any], where: str = "$") -> list[str]:
    """Every way ``value`` breaks ``node`` (empty when it conforms)."""
    node = _resolve(node)
    found = _unmatched_alternatives(value, node, where)
    kind = node.get("type")
    if kind is not None and not _is_type(value, kind):
        return [*found, f"{where}: {type(value).__name__} is not {kind}"]
    found += _value_problems(value, node, where)
    if isinstance(value, dict):
        found += _object_problems(value, node, where)
    if isinstance(value, list):
        found += _array_problems(value, node, where)
    return found


def _unmatched_alternatives(value: Any, node: dict[str, Any], where: str) -> list[str]:
    # The subset's oneOf cannot be exclusive: its plain JSON transcription (only "text" required, extra
    # properties allowed) also matches every verbose answer. So: at least one variant must match.
    return [
        f"{where}: matches none of {keyword}"
        for keyword in ("anyOf", "oneOf")
        if keyword in node and all(problems(value, option, where) for option in node[keyword])
    ]


def _is_type(value: Any, kind: str | list[str]) -> bool:
    kinds = kind if isinstance(kind, list) else [kind]
    return any(_TYPES[k](value) for k in kinds)


def _value_problems(value: Any, node: dict[str, Any], where: str) -> list[str]:
    """enum, maxLength, minimum and maximum."""
    found: list[str] = []
    if "enum" in node and value not in node["enum"]:
        found.append(f"{where}: {value!r} not in {node['enum']}")
    if isinstance(value, str) and "maxLength" in node and len(value) > node["maxLength"]:
        found.append(f"{where}: longer than {node['maxLength']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            found.append(f"{where}: {value} < {node['minimum']}")
        if "maximum" in node and value > node["maximum"]:
            found.append(f"{where}: {value} > {node['maximum']}")
    return found


def _object_problems(value: dict[str, Any], node: dict[str, Any], where: str) -> list[str]:
    """required, then each property against its schema, or additionalProperties: false."""
    properties = node.get("properties", {})
    found = [f"{where}: missing required {name!r}" for name in node.get("required", []) if name not in value]
    for name, item in value.items():
        if name in properties:
            found += problems(item, properties[name], f"{where}.{name}")
        elif node.get("additionalProperties") is False:
            found.append(f"{where}: unexpected property {name!r}")
    return found


def _array_problems(value: list[Any], node: dict[str, Any], where: str) -> list[str]:
    """minItems, maxItems, then each item against ``items``."""
    found: list[str] = []
    if "minItems" in node and len(value) < node["minItems"]:
        found.append(f"{where}: fewer than {node['minItems']} items")
    if "maxItems" in node and len(value) > node["maxItems"]:
        found.append(f"{where}: more than {node['maxItems']} items")
    if "items" in node:
        for index, item in enumerate(value):
            found += problems(item, node["items"], f"{where}[{index}]")
    return found


def assert_conforms(value: Any, node: dict[str, Any]) -> None:
    found = problems(value, node)
    assert not found, f"breaks the OpenAI spec: {found}; value: {value!r}"[:2000]


def assert_error_shape(body: Any, status: int) -> dict[str, Any]:
    """OpenAI's error object (its schema is not in the subset, so the rule is written here)."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == set(ERROR_FIELDS), error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    expected_type = "server_error" if status >= 500 else "invalid_request_error"
    assert error["type"] == expected_type, (status, error)
    return error
