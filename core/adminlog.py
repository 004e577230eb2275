"""The admin's history (LogEntry) for actions that change objects without a form."""

from collections.abc import Sequence

from django.contrib.admin.models import CHANGE, LogEntry
from django.db.models import Model
from django.http import HttpRequest


def admin_log(request: HttpRequest, objects: Sequence[Model], message: str) -> None:
    """One "changed" entry per object: who (the request's user), what (``message``), when
    (now). They show in each object's history page and in the admin's recent actions."""
    if objects:
        LogEntry.objects.log_actions(
            user_id=request.user.pk, queryset=objects, action_flag=CHANGE, change_message=message
        )
