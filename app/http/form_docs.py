"""The OpenAPI description of multipart bodies that the upload routes read part by part.

The routes take their form as a plain mapping (`app.http.forms` parses it, so that a bad part
is a 400 and a missing one names itself); Litestar would describe that as a bare object, and
clients generated from the document would send files as text fields. A `Parts` marker in the
body's annotation says what each part is; `MultipartDocs` turns it into the body's schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar.openapi.spec import Reference, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

# what a file part's bytes are: any file; the route checks its content
_BINARY = "application/octet-stream"


@dataclass(frozen=True)
class Parts:
    """The parts of a multipart body: files (binary, sent with a filename), JSON parts
    (a text part holding a document of the given type) and optional plain text parts."""

    files: dict[str, str]
    json: dict[str, tuple[type[Any], str]] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)


class MultipartDocs(OpenAPISchemaPlugin):
    """Describes a multipart body annotated with `Parts`: file and JSON parts required, each file
    `format: binary` (what generators send as a file) and each JSON part its own schema
    (sent as `application/json`, the default encoding of an object part)."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        """Only bodies carrying a `Parts` marker."""
        return _parts(field_definition) is not None

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        """An object with one property per part."""
        parts = _parts(field_definition)
        assert parts is not None
        properties: dict[str, Schema | Reference] = {
            name: Schema(
                type=OpenAPIType.STRING,
                format=OpenAPIFormat.BINARY,
                content_media_type=_BINARY,
                description=description,
            )
            for name, description in parts.files.items()
        }
        for name, (kind, _) in parts.json.items():
            # a bare $ref: generators read it as the type itself (siblings they may drop)
            properties[name] = schema_creator.for_field_definition(
                FieldDefinition.from_annotation(kind)
            )
        required = sorted(properties)
        for name, description in parts.text.items():
            properties[name] = Schema(type=OpenAPIType.STRING, description=description)
        described = {
            **parts.files,
            **{name: text for name, (_, text) in parts.json.items()},
            **parts.text,
        }
        return Schema(
            type=OpenAPIType.OBJECT,
            properties=properties,
            required=required,
            description="; ".join(f"`{name}`: {text}" for name, text in described.items()),
        )


def _parts(field_definition: FieldDefinition) -> Parts | None:
    return next((m for m in field_definition.metadata if isinstance(m, Parts)), None)
