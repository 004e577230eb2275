"""Request body parsing."""

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Deepest nesting of arrays and objects a request body may have. The API's bodies are flat
# objects; the bound keeps validation and error rendering away from deep recursion.
MAX_DEPTH = 32


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, with nesting deeper than MAX_DEPTH a 400 instead of a 500.

    A body nested past the interpreter's recursion limit makes the decoder raise
    RecursionError, which is not the ValueError DRF turns into a ParseError.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise _too_deep() from None
        if _deeper_than(data, MAX_DEPTH):
            raise _too_deep()
        return data


def _too_deep() -> ParseError:
    return ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.")


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether ``data`` has more than ``limit`` lists and dicts inside one another; no recursion."""
    level = [data]
    for _ in range(limit + 1):
        level = [node for node in level if isinstance(node, list | dict)]
        if not level:
            return False
        level = [child for node in level for child in (node.values() if isinstance(node, dict) else node)]
    return True
