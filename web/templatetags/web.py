"""How the web pages show times: "3 min ago", with the exact time for a title."""

from datetime import UTC, datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def ago(moment: datetime) -> str:
    """A short age: "just now", "3 min ago", "5 h ago", "2 d ago", then the date."""
    seconds = (timezone.now() - moment).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 7 * 86400:
        return f"{int(seconds // 86400)} d ago"
    return moment.strftime("%-d %b %Y")


@register.filter
def exact(moment: datetime) -> str:
    """The exact time, in UTC, as people read it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@register.filter
def iso(moment: datetime) -> str:
    """The machine-readable time of a <time> element."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
