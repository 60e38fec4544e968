"""The one judge of an attempt's end: every rule, driven with scripted errors and answers (no I/O)."""

from __future__ import annotations

import errno

import pytest

from bghttp.core import outcomes
from bghttp.core.outcomes import ClientErrors, Judgement, Outcome, judge_error, judge_status
from bghttp.errors import StoreError


class FakeTimeout(Exception):
    pass


class FakeTransport(Exception):
    pass


class FakeRefused(FakeTransport):  # a client's "refused to send" is often a transport error too
    pass


class FakeDecoding(Exception):
    pass


class FakeRedirects(Exception):
    pass


class HeadTooLarge(FakeTransport):
    pass


CLIENT = ClientErrors(
    timeout=(FakeTimeout,),
    too_many_redirects=(FakeRedirects,),
    refused_to_send=(FakeRefused,),
    decoding=(FakeDecoding,),
    transport=(FakeTransport,),
    head_too_large=lambda error: isinstance(error, HeadTooLarge),
    head_limit=64 * 1024,
)


def judge(error: BaseException, *, phase: str = "connecting", status_code: int | None = None) -> Judgement:
    return judge_error(error, CLIENT, phase=phase, timeout=2.5, status_code=status_code)


def caused(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (outcomes.AttemptCancelled("x"), Judgement(Outcome.CANCELLED, "cancelled while connecting")),
        (FakeTimeout(outcomes.DEADLINE_PASSED), Judgement(Outcome.TIMEOUT, "timeout after 2.5s while connecting")),
        (FakeTimeout("read"), Judgement(Outcome.TIMEOUT, "timeout after 2.5s while connecting: read")),
        (outcomes.EgressBlocked("10.0.0.1 is private"), Judgement(Outcome.BLOCKED, "10.0.0.1 is private")),
        (outcomes.ResponseTooLarge("too big"), Judgement(Outcome.TOO_LARGE, "too big")),
        (outcomes.TooManyRedirects("more than 20"), Judgement(Outcome.INVALID, "more than 20")),
        (FakeRedirects("client's own"), Judgement(Outcome.INVALID, "client's own")),
        (outcomes.RedirectRefused("to ftp:"), Judgement(Outcome.INVALID, "to ftp:")),
        (outcomes.RequestUnsendable("no body"), Judgement(Outcome.INVALID, "the request cannot be sent: no body")),
        (FakeRefused("bad header"), Judgement(Outcome.INVALID, "the request cannot be sent: FakeRefused: bad header")),
        (
            UnicodeEncodeError("ascii", "é", 0, 1, "no"),
            Judgement(
                Outcome.INVALID,
                "the request cannot be sent: UnicodeEncodeError: 'ascii' codec can't encode character "
                "'\\xe9' in position 0: no",
            ),
        ),
        (
            HeadTooLarge("buffer"),
            Judgement(
                Outcome.BAD_RESPONSE,
                "the response head is larger than the 64 KiB this client reads (buffer); "
                "not retried: the server would send it again",
                final=True,
            ),
        ),
        (FakeTransport("reset"), Judgement(Outcome.NETWORK_ERROR, "FakeTransport while connecting: reset")),
        (ValueError("bug"), Judgement(Outcome.INVALID, "unexpected ValueError while connecting: bug")),
    ],
)
def test_each_error_is_judged_by_its_rule(error: BaseException, expected: Judgement) -> None:
    assert judge(error) == expected


@pytest.mark.parametrize("error", [outcomes.BadEncoding("not gzip"), FakeDecoding("not gzip")])
def test_a_body_that_contradicts_its_encoding_is_a_bad_response_with_its_status(error: BaseException) -> None:
    assert judge(error, phase="reading the response body", status_code=200) == Judgement(
        Outcome.BAD_RESPONSE, "HTTP 200, not gzip"
    )


def test_store_failures_say_whether_anything_was_sent_and_whether_the_disk_is_full() -> None:
    not_recorded = caused(outcomes.SendNotRecorded("x"), OSError(errno.EIO, "EIO"))
    assert judge(not_recorded) == Judgement(
        Outcome.STORE_ERROR, "not sent: the attempt could not be recorded first: [Errno 5] EIO"
    )
    # httpcore's pool re-raises the hook's error "from None": the store error is kept on the exception.
    no_room = outcomes.SendNotRecorded("x", caused(StoreError("cannot write s.log"), OSError(errno.ENOSPC, "full")))
    assert judge(no_room) == Judgement(
        Outcome.DISK_FULL, "not sent: no space left to record the attempt first: cannot write s.log"
    )
    full = caused(outcomes.ResponseNotSaved(), OSError(errno.ENOSPC, "full"))
    assert judge(full) == Judgement(Outcome.DISK_FULL, "no space left to save the response: [Errno 28] full")
    other = caused(outcomes.ResponseNotSaved(), OSError(errno.EACCES, "denied"))
    assert judge(other) == Judgement(Outcome.STORE_ERROR, "cannot save the response: [Errno 13] denied")


def test_a_disk_full_error_is_seen_through_its_causes() -> None:
    assert outcomes.is_disk_full(caused(RuntimeError("store"), OSError(errno.EDQUOT, "quota")))
    assert not outcomes.is_disk_full(caused(RuntimeError("store"), OSError(errno.EIO, "io")))
    assert not outcomes.is_disk_full(None)


def test_a_client_with_no_classes_judges_its_errors_unexpected() -> None:
    assert judge_error(OSError("x"), ClientErrors(), phase="connecting", timeout=1, status_code=None).outcome is (
        Outcome.INVALID
    )


@pytest.mark.parametrize("status_code", [200, 204, 304, 399])
def test_an_answer_below_400_is_a_success(status_code: int) -> None:
    assert judge_status(status_code, "Whatever", [("Retry-After", "5")]) == Judgement(Outcome.SUCCESS)


def test_an_error_answer_says_its_status_and_reason() -> None:
    assert judge_status(404, "Not Found") == Judgement(Outcome.HTTP_ERROR, "HTTP 404 Not Found")
    assert judge_status(599) == Judgement(Outcome.HTTP_ERROR, "HTTP 599")


@pytest.mark.parametrize(("status_code", "expected"), [(429, 7.0), (503, 7.0), (500, None), (502, None)])
def test_retry_after_is_read_only_for_429_and_503(status_code: int, expected: float | None) -> None:
    judged = judge_status(status_code, "", [("retry-after", "7"), ("Retry-After", "9")], now=0.0)
    assert judged.retry_after == expected


def test_an_http_date_retry_after_counts_from_now_and_a_broken_one_is_ignored() -> None:
    date = "Thu, 01 Jan 1970 00:01:40 GMT"  # 100 s after the epoch
    assert judge_status(503, "", [("Retry-After", date)], now=40.0).retry_after == 60.0
    assert judge_status(503, "", [("Retry-After", "-1")], now=0.0).retry_after is None
    assert judge_status(503, "", [], now=0.0).retry_after is None


def test_outcome_values_are_the_strings_on_disk() -> None:
    assert [o.value for o in Outcome] == [
        "success", "http_error", "timeout", "network_error", "bad_response", "disk_full", "store_error",
        "too_large", "blocked", "invalid", "cancelled", "interrupted",
    ]  # fmt: skip
