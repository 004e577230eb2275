"""Django's own threads in front of it: a request no Django thread takes up in time is a
503 at once, the probes need none, and Django's answer and errors come back unchanged."""

import json
import threading

import pytest
from django.http import HttpResponse
from prometheus_client import REGISTRY

from feedsite.admission import DjangoThreads


class Blocking:
    """A WSGI app that holds its thread until released, and says which thread ran it."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.threads: list[str] = []

    def __call__(self, environ, start_response):
        self.threads.append(threading.current_thread().name)
        if environ["PATH_INFO"] == "/hold":
            self.entered.set()
            assert self.release.wait(10)
        if environ["PATH_INFO"] == "/fail":
            raise ValueError("the view failed")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return HttpResponse(b"done")


def call(app, path: str, **environ) -> tuple[str, dict, bytes]:
    answer = {}

    def start_response(status, headers):
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(app({"PATH_INFO": path, **environ}, start_response))
    return answer["status"], answer["headers"], body


@pytest.fixture
def held():
    inner = Blocking()
    app = DjangoThreads(inner, threads=1, wait=0.05)
    holder = threading.Thread(target=call, args=(app, "/hold"))
    holder.start()
    assert inner.entered.wait(5)
    yield app, inner
    inner.release.set()
    holder.join(5)


def test_a_request_runs_on_a_django_thread_and_its_answer_comes_back():
    inner = Blocking()
    app = DjangoThreads(inner, threads=1, wait=5)

    status, _, body = call(app, "/posts")

    assert (status, body) == ("200 OK", b"done")
    assert inner.threads[-1].startswith("django")


def test_a_request_no_django_thread_takes_up_in_time_is_a_503_at_once(held):
    app, _ = held
    shed = REGISTRY.get_sample_value("feed_api_requests_shed_total") or 0.0

    status, headers, body = call(app, "/posts", HTTP_X_REQUEST_ID="r-1")
    _, html_headers, html = call(app, "/", HTTP_ACCEPT="text/html,*/*")

    assert status == "503 Service Unavailable"
    assert headers["Retry-After"] == "1"
    assert headers["X-Request-ID"] == "r-1"
    assert json.loads(body) == {"detail": "Service busy; try again shortly."}
    assert html_headers["Content-Type"].startswith("text/html")
    assert b"try again shortly" in html
    assert REGISTRY.get_sample_value("feed_api_requests_shed_total") == shed + 2


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_the_probes_and_metrics_need_no_django_thread(held, path):
    app, inner = held

    status, _, _ = call(app, path)

    assert status == "200 OK"
    assert inner.threads[-1] == threading.current_thread().name


def test_an_error_in_django_reaches_the_server_as_it_would_without_the_threads():
    app = DjangoThreads(Blocking(), threads=1, wait=5)

    with pytest.raises(ValueError, match="the view failed"):
        call(app, "/fail")
