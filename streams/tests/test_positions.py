import pytest

from streams.positions import InvalidPosition, Position, position_decode, position_encode


@pytest.mark.parametrize("position", [Position(0, 0), Position(824, 1), Position(10**17, 10**17)])
def test_a_position_survives_its_round_trip(position):
    assert position_decode(position_encode(position)) == position


def test_positions_order_by_transaction_then_post():
    assert Position(5, 900) < Position(6, 1) < Position(6, 2)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "bogus",
        "czE6",  # "s1:" and nothing
        position_encode(Position(1, 2)).replace("c", "d", 1),  # another prefix
        "cDE6MTIz",  # a page cursor ("p1:123")
        "czE6LTEuMg",  # "s1:-1.2"
        "czE6MS4y" + "A" * 80,  # too long
    ],
)
def test_anything_not_issued_is_refused(text):
    with pytest.raises(InvalidPosition):
        position_decode(text)


@pytest.mark.django_db(transaction=True)
def test_a_window_read_in_chunks_holds_each_post_once_in_the_order_added(make_user):
    from posts.services import post_create
    from streams.selectors import stream_horizon, stream_window

    low = stream_horizon().low
    author = make_user()
    posts = [post_create(author=author, content=f"post {n}").pk for n in range(5)]
    below = stream_horizon().low
    seen, after = [], Position(low, 0)
    while chunk := stream_window(low=low, below=below, after=after, limit=2):
        assert len(chunk) <= 2
        seen += [post_id for _, post_id, _ in chunk]
        after = Position(*chunk[-1][:2])
    assert seen == posts


def test_the_stream_process_raises_its_open_files_limit_to_the_most_it_may_have():
    import subprocess
    import sys

    script = (
        "import resource, django, os;"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'feedsite.settings.test'; django.setup();"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE);"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard));"
        "from streams.management.commands.run_stream import open_files_raise;"
        "print(open_files_raise() == hard, resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["True", "True"], result.stderr[-2000:]
