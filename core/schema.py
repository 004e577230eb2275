"""OpenAPI pieces shared by the API views: error bodies and response sets."""

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

Detail = inline_serializer("Error", {"detail": serializers.CharField()})
FieldErrors = OpenApiResponse(
    inline_serializer(
        "ValidationError",
        {"field_name": serializers.ListField(child=serializers.CharField(), required=False)},
    ),
    description="Invalid input: each offending field (or non_field_errors) with its messages, "
    'or {"detail": ...} for a body that is not valid JSON.',
)

UNAUTHENTICATED = {401: OpenApiResponse(Detail, description="Missing or invalid token.")}
THROTTLED = {429: OpenApiResponse(Detail, description="Rate limit reached; see Retry-After.")}
UNAVAILABLE = {
    503: OpenApiResponse(
        Detail, description="The rate limit could not be checked (Redis down); see Retry-After."
    )
}
DATABASE_UNAVAILABLE = {
    503: OpenApiResponse(
        Detail,
        description="The database did not answer within its lock or statement timeout, or "
        "no Django thread took it up in time; nothing was stored. Retry after Retry-After "
        "(with the same Idempotency-Key, for a post).",
    )
}
TOO_LARGE = {413: OpenApiResponse(Detail, description="Body larger than the configured limit.")}
NOT_FOUND = {404: OpenApiResponse(Detail, description="No such object.")}
FORBIDDEN = {403: OpenApiResponse(Detail, description="Not allowed for this user.")}
BAD_INPUT = {400: FieldErrors}
