"""The contract document and a small JSON Schema checker for it.

``openapi.json`` is the single source of truth: the reference server checks
request bodies against its schemas, and the tests check every response and
every example against them. The checker implements the subset of JSON Schema
2020-12 that the document uses and refuses any other keyword, so the document
cannot silently grow a rule nobody enforces.

Pure functions; thread-safe. Cost: linear in the size of the checked value.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from typing import Any

__all__ = ["SchemaError", "load_openapi", "resolve", "schema_errors"]

# Keywords that only annotate; they never make a value invalid.
_ANNOTATIONS = frozenset({"description", "title", "examples", "example", "default", "deprecated", "$comment"})
_CHECKED = frozenset(
    {
        "$ref",
        "type",
        "enum",
        "const",
        "anyOf",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "format",
    }
)


class SchemaError(ValueError):
    """The schema itself uses something this checker does not implement."""


@functools.cache
def _openapi_text() -> str:
    return resources.files(__package__).joinpath("openapi.json").read_text(encoding="utf-8")


def load_openapi() -> dict[str, Any]:
    """The contract as a fresh dict (callers may mutate their copy)."""
    document: dict[str, Any] = json.loads(_openapi_text())
    return document


def resolve(document: Mapping[str, Any], ref: str) -> Any:
    """Follow a local JSON pointer such as ``#/components/schemas/Job``."""
    if not ref.startswith("#/"):
        raise SchemaError(f"only local references are supported: {ref!r}")
    node: Any = document
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise SchemaError(f"unresolvable reference {ref!r}")
        node = node[part]
    return node


def schema_errors(value: Any, schema: Mapping[str, Any], document: Mapping[str, Any], path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema`` (empty when it conforms).

    Messages name the location (``$.renditions[0].width``) and never repeat
    long values. ``document`` resolves ``$ref``.
    """
    errors: list[str] = []
    _check(value, schema, document, path, errors)
    return errors


def _type_matches(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if name == "number":
        return not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
        )
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise SchemaError(f"unknown type {name!r}")


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(value: Any, schema: Mapping[str, Any], document: Mapping[str, Any], path: str, errors: list[str]) -> None:
    unknown = set(schema) - _CHECKED - _ANNOTATIONS
    if unknown:
        raise SchemaError(f"unsupported keywords {sorted(unknown)} at {path}")
    if "$ref" in schema:
        _check(value, resolve(document, schema["$ref"]), document, path, errors)
    if "anyOf" in schema:
        branches = [schema_errors(value, branch, document, path) for branch in schema["anyOf"]]
        if all(branches):
            errors.append(f"{path}: matches none of the allowed forms ({'; '.join(b[0] for b in branches)})")
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_matches(value, name) for name in names):
            errors.append(f"{path}: expected {' or '.join(names)}, got {_short(value)}")
            return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {_short(value)} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: must be {_short(schema['const'])}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(value, schema, path, errors)
    elif isinstance(value, str):
        _check_string(value, schema, path, errors)
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: allows at most {schema['maxItems']} items")
        if "items" in schema:
            for index, item in enumerate(value):
                _check(item, schema["items"], document, f"{path}[{index}]", errors)
    elif isinstance(value, dict):
        _check_object(value, schema, document, path, errors)


def _check_number(value: float, schema: Mapping[str, Any], path: str, errors: list[str]) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {value} is less than the minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: {value} is greater than the maximum {schema['maximum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"{path}: {value} must be greater than {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        errors.append(f"{path}: {value} must be less than {schema['exclusiveMaximum']}")


def _check_string(value: str, schema: Mapping[str, Any], path: str, errors: list[str]) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: shorter than {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']} characters")
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        errors.append(f"{path}: {_short(value)} does not match {schema['pattern']}")
    if schema.get("format") == "date-time":
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None or "T" not in value:
            errors.append(f"{path}: {_short(value)} is not an RFC 3339 date-time with a time zone")
    elif "format" in schema:
        raise SchemaError(f"unsupported format {schema['format']!r} at {path}")


def _check_object(
    value: dict[str, Any], schema: Mapping[str, Any], document: Mapping[str, Any], path: str, errors: list[str]
) -> None:
    properties: Mapping[str, Any] = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            errors.append(f"{path}: missing {name!r}")
    additional = schema.get("additionalProperties", True)
    if additional is not True and additional is not False:
        raise SchemaError(f"additionalProperties must be a boolean at {path}")
    for name, item in value.items():
        if name in properties:
            _check(item, properties[name], document, f"{path}.{name}", errors)
        elif additional is False:
            errors.append(f"{path}: unexpected property {name!r}")
