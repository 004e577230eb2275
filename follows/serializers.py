from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from core.fields import StrictCharField
from follows.models import Follow

User = get_user_model()

MAX_ID = 2**63 - 1


class UserCreateSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=128, trim_whitespace=False)

    def validate_username(self, value: str) -> str:
        # The name is stored NFKC-normalised (create_user does it), so it is checked in that
        # form: "\uff42ob" is "bob". Names equal ignoring case are one name; a unique index
        # on UPPER(username) settles two signups that pass this check at once.
        value = User.normalize_username(value)
        field = User._meta.get_field(User.USERNAME_FIELD)
        try:
            field.run_validators(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        if User.objects.filter(**{f"{User.USERNAME_FIELD}__iexact": value}).exists():
            raise serializers.ValidationError("A user with that username already exists.")
        return value

    def validate(self, attrs: dict) -> dict:
        try:
            validate_password(attrs["password"], User(username=attrs["username"]))
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": exc.messages}) from None
        return attrs


class FollowCreateSerializer(serializers.Serializer):
    followee_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)


class FollowSerializer(serializers.ModelSerializer):
    class Meta:
        model = Follow
        fields = ["follower_id", "followee_id", "created_at"]


class RelationCreateSerializer(serializers.Serializer):
    user_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)


class RelationSerializer(serializers.Serializer):
    """One account blocked or muted, as GET /blocks and GET /mutes list them."""

    user_id = serializers.IntegerField(source="target_id")
    username = serializers.CharField(source="target.username")
    created_at = serializers.DateTimeField()


class RelationPageSerializer(serializers.Serializer):
    """The shape of a page of blocks or mutes; documents the API."""

    results = RelationSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True, help_text="Null on the last page.")
