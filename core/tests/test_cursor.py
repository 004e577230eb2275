import pytest

from core.cursor import InvalidCursor, cursor_decode, cursor_encode


@pytest.mark.parametrize("post_id", [1, 42, 2**59])
def test_cursor_round_trips(post_id):
    assert cursor_decode(cursor_encode(post_id)) == post_id


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!", "cDE6", "cDE6LTU", "cDE6MA", "eDE6NQ", "cDE6" + "OTk5" * 10, "\u00e9\u00e9", "cDE6NQ=x"],
)
def test_cursor_rejects_anything_it_did_not_issue(cursor):
    with pytest.raises(InvalidCursor):
        cursor_decode(cursor)
