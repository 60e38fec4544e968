"""``bghttp.__all__`` is exactly what docs/api.md documents, and every public error is a BghttpError."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import bghttp
from bghttp import BackgroundHttpClient, BghttpError, InvalidArgument, Settings, errors

API_DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _documented_names() -> set[str]:
    text = API_DOCS.read_text()
    section = text.split("## Public API", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([A-Z][A-Za-z]+)`", section))


def test_all_is_what_the_api_page_documents() -> None:
    assert set(bghttp.__all__) == _documented_names()
    assert len(bghttp.__all__) == len(set(bghttp.__all__))
    for name in bghttp.__all__:
        assert hasattr(bghttp, name), name


def test_every_error_class_is_exported_drawn_in_the_tree_and_a_bghttp_error() -> None:
    error_classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == errors.__name__
    }
    assert error_classes <= set(bghttp.__all__)
    tree = errors.__doc__ or ""
    for name in error_classes:
        assert issubclass(getattr(errors, name), BghttpError), name
        assert re.search(rf"\b{name}\b", tree), f"{name} is missing from the tree in errors.py"
    assert issubclass(bghttp.ConfigError, BghttpError) and issubclass(bghttp.ConfigError, ValueError)


def test_bad_arguments_raise_bghttp_errors_that_are_still_value_errors(tmp_path: Path) -> None:
    settings = Settings(broker_url="local", store_dir=tmp_path / "store", fsync=False)
    with pytest.raises(InvalidArgument, match="on_conflict"):
        BackgroundHttpClient(settings, on_conflict="nope")  # type: ignore[arg-type]
    with BackgroundHttpClient(settings) as client:
        with pytest.raises(InvalidArgument, match="status") as raised:
            client.list(status="bogus")
        assert isinstance(raised.value, ValueError)
        with pytest.raises(InvalidArgument, match="limit"):
            client.list(limit=-1)
        with pytest.raises(InvalidArgument, match="timeout"):
            client.wait("any-id", timeout=float("nan"))  # a NaN deadline never comes: it used to wait forever


def test_version_is_the_installed_distributions_else_a_placeholder(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    assert bghttp.__version__ == importlib.metadata.version("bghttp")
    assert "__version__" in dir(bghttp)

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.delitem(vars(bghttp), "__version__")  # computed once, on first use
    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert bghttp.__version__ == "0+unknown"
