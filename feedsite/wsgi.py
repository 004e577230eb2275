"""WSGI entry point, used by gunicorn (see feedsite/gunicorn.conf.py)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedsite.settings.base")

django_application = get_wsgi_application()

from feeds.fastpath import CachedFeedPages  # noqa: E402  (needs the settings loaded above)

# Cached first feed pages are answered in front of Django; everything else goes through it.
application = CachedFeedPages(django_application)
