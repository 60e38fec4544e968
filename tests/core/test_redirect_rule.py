"""The redirect rule: methods and headers per status and origin, from scripted hops (no I/O)."""

from __future__ import annotations

import pytest

from bghttp.core.redirects import RedirectRule, is_redirect, redirect_rule

HEADERS = [
    ("Authorization", "Bearer s3cret"),
    ("Cookie", "a=1"),
    ("X-Api-Key", "k"),
    ("Host", "a.test"),
    ("Content-Type", "application/json"),
    ("Content-Length", "2"),
    ("Accept", "*/*"),
]
PLAIN = [("Accept", "*/*")]


@pytest.mark.parametrize(
    ("method", "status_code", "new_method", "keeps_body"),
    [
        ("POST", 301, "GET", False),
        ("POST", 302, "GET", False),
        ("PUT", 302, "PUT", True),
        ("POST", 303, "GET", False),
        ("PUT", 303, "GET", False),
        ("HEAD", 303, "HEAD", True),
        ("POST", 307, "POST", True),
        ("PATCH", 308, "PATCH", True),
        ("GET", 301, "GET", True),
    ],
)
def test_the_method_per_status(method: str, status_code: int, new_method: str, keeps_body: bool) -> None:
    rule = redirect_rule(method, status_code, PLAIN, cross_origin=False, keeps_body=True)
    assert (rule.method, rule.keeps_body) == (new_method, keeps_body)


def test_same_origin_keeps_every_header_and_a_body_kept_keeps_its_headers() -> None:
    assert redirect_rule("POST", 307, HEADERS, cross_origin=False, keeps_body=True) == RedirectRule(
        "POST", HEADERS, True
    )


def test_another_origin_drops_secrets_and_host() -> None:
    rule = redirect_rule("POST", 307, HEADERS, cross_origin=True, keeps_body=True)
    assert rule.headers == [("Content-Type", "application/json"), ("Content-Length", "2"), ("Accept", "*/*")]


def test_a_request_turned_into_get_loses_its_body_headers() -> None:
    rule = redirect_rule("POST", 303, HEADERS, cross_origin=True, keeps_body=True)
    assert rule == RedirectRule("GET", [("Accept", "*/*")], False)


def test_a_body_dropped_earlier_stays_dropped() -> None:
    assert not redirect_rule("GET", 307, PLAIN, cross_origin=False, keeps_body=False).keeps_body


def test_only_redirect_statuses_with_a_location_are_followed() -> None:
    assert is_redirect(302, True) and not is_redirect(302, False) and not is_redirect(300, True)
    assert not is_redirect(200, True)
