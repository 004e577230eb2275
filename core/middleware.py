"""Middleware that only browsers need, kept off the token-authenticated API.

Sessions, CSRF, Django's authentication middleware and messages serve the admin (and any
page a browser uses with a session). An API request authenticates with its token in DRF
and is exempt from CSRF, so on it they only cost time: a lazy session never read, a CSRF
check the view is exempt from, a message store never used. Each class here is Django's
own, run only for settings.BROWSER_PATHS and the paths under settings.BROWSER_PATH_PREFIXES;
being subclasses, they satisfy the admin's checks that its middleware is installed.
"""

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware


class BrowserOnly:
    """Mixin: the middleware runs for browser paths; any other request goes straight on."""

    def __init__(self, get_response) -> None:
        super().__init__(get_response)
        self.browser_prefixes = tuple(settings.BROWSER_PATH_PREFIXES)
        self.browser_exact = frozenset(settings.BROWSER_PATHS)

    def browser_path(self, path: str) -> bool:
        return path in self.browser_exact or path.startswith(self.browser_prefixes)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.browser_path(request.path_info):
            return super().__call__(request)
        return self.get_response(request)


class BrowserSessionMiddleware(BrowserOnly, SessionMiddleware):
    pass


class BrowserCsrfViewMiddleware(BrowserOnly, CsrfViewMiddleware):
    def process_view(self, request: HttpRequest, callback, args, kwargs) -> HttpResponse | None:
        # Django calls process_view itself, outside __call__.
        if not self.browser_path(request.path_info):
            return None
        return super().process_view(request, callback, args, kwargs)


class BrowserAuthenticationMiddleware(BrowserOnly, AuthenticationMiddleware):
    pass


class BrowserMessageMiddleware(BrowserOnly, MessageMiddleware):
    pass
