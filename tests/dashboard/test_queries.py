"""The dashboard's reads without a browser: escaping, the listing newest first, filters, the preview."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from bghttp.dashboard.queries import PREVIEW_BYTES, BadFilter, DashboardQueries, RequestDetail, RequestFilter
from bghttp.dashboard.visible import visible, visible_line
from bghttp.models import RequestSpec
from bghttp.store import FileStore


def test_visible_shows_controls_bidi_and_invisible_characters_as_escapes() -> None:
    hostile = "a\x1b[31mb\x00c\x7f\x9b\u202ed\u2066e\u200bf\ufeffg\U000e0041h"
    assert visible(hostile) == "a\\x1b[31mb\\x00c\\x7f\\x9b\\u202ed\\u2066e\\u200bf\\ufeffg\\ue0041h"
    assert visible("line 1\n\tline 2 ü 中") == "line 1\n\tline 2 ü 中"
    assert visible_line("a\nb\tc\r") == "a\\nb\\tc\\x0d"


def _add(store: FileStore, request_id: str, created: float, url: str = "http://a.example/") -> None:
    store.create_request(RequestSpec(request_id, "GET", url, [], 5.0, 0, created))
    os.utime(store.request_file_path(request_id), (created, created))


def test_requests_are_listed_newest_first_and_the_index_follows_new_and_removed_ones(tmp_path: Path) -> None:
    store = FileStore(tmp_path, fsync=False)
    now = time.time()
    for number in range(250):
        _add(store, f"r{number:03d}", now - 1000 + number, url=f"http://h{number % 2}.example/")
    queries = DashboardQueries(store)
    first = queries.list_requests(RequestFilter(), page=1)
    assert [row.record.request_id for row in first.rows[:2]] == ["r249", "r248"] and first.has_next
    third = queries.list_requests(RequestFilter(), page=3)
    assert [row.record.request_id for row in third.rows] == [f"r{n:03d}" for n in range(49, -1, -1)]
    assert not third.has_next
    _add(store, "newest", now)
    store.delete("r249")
    assert [row.record.request_id for row in queries.list_requests(RequestFilter(), 1).rows[:2]] == ["newest", "r248"]
    hosts = queries.list_requests(RequestFilter(host="h1.example"), 1).rows
    assert {row.host for row in hosts} == {"h1.example"} and hosts[0].record.request_id == "r247"
    recent = queries.list_requests(RequestFilter.parse({"since": "755s"}, now), 1).rows
    assert [row.record.request_id for row in recent] == ["newest", "r248", "r247", "r246", "r245"]
    assert [row.record.request_id for row in queries.list_requests(RequestFilter(search="r10"), 1).rows] == [
        f"r10{n}" for n in range(9, -1, -1)
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "<script>"},
        {"q": "../etc"},
        {"since": "yesterday"},
        {"until": "2026-13-45"},
        {"since": "2026"},  # a year or 2026 seconds? A bare number has no unit: refused, not guessed
    ],
)
def test_a_bad_filter_is_refused_with_a_message(params: dict[str, str]) -> None:
    with pytest.raises(BadFilter):
        RequestFilter.parse(params, time.time())


def test_an_id_that_is_no_request_id_has_no_page(tmp_path: Path) -> None:
    queries = DashboardQueries(FileStore(tmp_path, fsync=False))
    for request_id in ("..", ".", "../status/x", "a/b", "a" * 129, ""):
        assert queries.request_detail(request_id) is None


def test_the_body_preview_is_cut_at_its_limit(tmp_path: Path) -> None:
    store = FileStore(tmp_path, fsync=False)
    _add(store, "big", time.time())
    with store.open_response_part("big") as part:
        part.write(b"<b>" * PREVIEW_BYTES)
    store.commit_response("big", {"status_code": 200, "headers": [["X-A", "\u202e"]], "size": 3 * PREVIEW_BYTES})
    detail = DashboardQueries(store).request_detail("big")
    assert detail is not None and detail.preview is not None
    assert detail.preview.shown == PREVIEW_BYTES and detail.preview.size == 3 * PREVIEW_BYTES and detail.preview.cut
    assert set(detail.files) >= {"request", "status", "response", "response_body"}


def test_a_page_past_the_last_reads_no_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``?page=10**9`` must not make the dashboard read every status record of the store."""
    store = FileStore(tmp_path, fsync=False)
    for number in range(30):
        _add(store, f"r{number}", time.time())
    queries = DashboardQueries(store)
    reads: list[str] = []
    original = queries._status
    monkeypatch.setattr(queries, "_status", lambda request_id: reads.append(request_id) or original(request_id))
    page = queries.list_requests(RequestFilter(), page=10**9, page_size=10)
    assert page.rows == [] and not page.has_next
    assert reads == []


def test_a_store_that_cannot_be_listed_is_a_page_that_says_so(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from bghttp import Settings
    from bghttp.dashboard.app import create_app

    store = FileStore(tmp_path / "store", fsync=False)
    _add(store, "r1", time.time())
    app = create_app(Settings(store_dir=tmp_path / "store", broker_url="local"))
    # Broken after the dashboard started (a store that is not a store is refused at start, in one line).
    (tmp_path / "store" / "requests" / "r1.json").unlink()
    (tmp_path / "store" / "requests").rmdir()
    (tmp_path / "store" / "requests").write_text("not a directory")
    answer = TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False).get("/requests")
    assert answer.status_code == 503 and "cannot be read" in answer.text


def test_the_body_preview_reads_only_a_regular_file_at_the_store_path(tmp_path: Path) -> None:
    """Anyone who can write the store could put a symlink (to a file only the dashboard's user may read)
    or a FIFO (an open that waits for a writer forever, holding a server thread) where a body belongs."""
    store = FileStore(tmp_path / "store", fsync=False)
    secret = tmp_path / "secret.txt"
    secret.write_text("the dashboard user's private key")
    for request_id in ("linked", "fifo"):
        _add(store, request_id, time.time())
        with store.open_response_part(request_id) as part:
            part.write(b"body")
        store.commit_response(request_id, {"status_code": 200, "headers": [], "size": 4})
        store.response_file_path(request_id).unlink()
    store.response_file_path("linked").symlink_to(secret)
    os.mkfifo(store.response_file_path("fifo"))
    queries = DashboardQueries(store)

    linked = queries.request_detail("linked")
    assert linked is not None and linked.response is not None
    assert linked.preview is None or "private key" not in linked.preview.text

    details: list[object] = []
    reader = threading.Thread(target=lambda: details.append(queries.request_detail("fifo")), daemon=True)
    reader.start()
    reader.join(timeout=60)  # a hang guard, not a timing: the read returns at once or never
    if reader.is_alive():
        with open(os.open(store.response_file_path("fifo"), os.O_WRONLY | os.O_NONBLOCK), "wb"):
            pass  # lets the stuck open return
        reader.join()
        pytest.fail("the page of a request whose body is a FIFO waited for a writer")
    [detail] = details
    assert isinstance(detail, RequestDetail) and detail.preview is None


def test_a_request_file_nested_too_deep_is_an_unreadable_request_not_a_failed_page(tmp_path: Path) -> None:
    """A request file edited by hand into JSON nested deeper than the parser recurses is unreadable like
    any other file that is no request: its page says so; the requests page lists it without its URL."""
    from starlette.testclient import TestClient

    from bghttp import Settings
    from bghttp.dashboard.app import create_app

    store = FileStore(tmp_path / "store", fsync=False)
    _add(store, "deep", time.time())
    store.request_file_path("deep").write_text("[" * 100_000 + "]" * 100_000)
    client = TestClient(
        create_app(Settings(store_dir=tmp_path / "store", broker_url="local")),
        base_url="http://127.0.0.1",
        raise_server_exceptions=False,
    )
    page = client.get("/requests/deep")
    assert page.status_code == 200, page.text[-500:]
    assert "cannot read" in page.text
    listing = client.get("/requests")
    assert listing.status_code == 200 and 'href="/requests/deep"' in listing.text


def test_a_response_record_with_only_some_fields_is_shown_with_the_rest_as_dashes(tmp_path: Path) -> None:
    """A response record holds what its writer put in it (an older bghttp, another Store, a hand-made
    one): the page shows the fields it has, not a 500 for the ones it lacks."""
    from starlette.testclient import TestClient

    from bghttp import Settings
    from bghttp.dashboard.app import create_app

    store = FileStore(tmp_path / "store", fsync=False)
    _add(store, "sparse", time.time())
    with store.open_response_part("sparse") as part:
        part.write(b"body")
    store.commit_response("sparse", {"status_code": 200, "headers": [["X-A", "b"]]})
    client = TestClient(
        create_app(Settings(store_dir=tmp_path / "store", broker_url="local")),
        base_url="http://127.0.0.1",
        raise_server_exceptions=False,
    )
    page = client.get("/requests/sparse")
    assert page.status_code == 200, page.text[-500:]
    assert 'id="response-status">200 </td>' in page.text and "X-A" in page.text and ">body</pre>" in page.text


def test_failures_of_an_unknown_host_are_not_a_link_to_a_filter_that_finds_none(tmp_path: Path) -> None:
    """The overview counts a failure whose request file cannot be read under "(unknown)"; a link to
    ``/requests?host=(unknown)`` would list none of them."""
    from starlette.testclient import TestClient

    from bghttp import Settings
    from bghttp.dashboard.app import create_app
    from bghttp.lifecycle import RequestLifecycle

    store = FileStore(tmp_path / "store", fsync=False)
    for request_id in ("known", "unreadable"):
        _add(store, request_id, time.time(), url="http://failing.example/")
        RequestLifecycle(store).fail(request_id, "broken")
    store.request_file_path("unreadable").write_text("{cut")
    client = TestClient(
        create_app(Settings(store_dir=tmp_path / "store", broker_url="local")), base_url="http://127.0.0.1"
    )
    table = client.get("/").text.split('id="failures-by-host"', 1)[1].split("</table>", 1)[0]
    assert 'href="/requests?status=failed&amp;host=failing.example"' in table
    assert "(unknown)" in table and "host=%28unknown%29" not in table
