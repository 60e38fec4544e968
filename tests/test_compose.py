"""The Docker fleet files, checked structurally (no Docker engine needed)."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bghttp.cli import build_parser
from tests.support import PROJECT_ROOT

DOCKER = PROJECT_ROOT / "docker"
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def _interpolate(text: str) -> str:
    """Compose's ``${NAME:-default}`` with nothing set: the default."""
    return _DEFAULTED.sub(lambda match: match.group(2), text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(_interpolate((DOCKER / "compose.yaml").read_text()))
    assert isinstance(data, dict)
    return data


def _volume_targets(service: dict[str, Any]) -> dict[str, str]:
    return dict(reversed(entry.split(":")[:2]) for entry in service["volumes"])  # target -> source


def test_rabbitmq_is_healthchecked_and_durable(compose: dict[str, Any]) -> None:
    rabbitmq = compose["services"]["rabbitmq"]

    assert rabbitmq["image"].startswith("rabbitmq:")
    check = rabbitmq["healthcheck"]
    assert check["test"][0] == "CMD" and "rabbitmq-diagnostics" in check["test"]
    assert {"interval", "timeout", "retries"} <= check.keys()
    data_volume = _volume_targets(rabbitmq)["/var/lib/rabbitmq"]
    assert data_volume in compose["volumes"]  # a named, durable volume
    assert rabbitmq["hostname"]  # the data directory is named after the node
    user = rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"]
    assert user != "guest"  # guest may only connect from localhost
    assert all(port.startswith("127.0.0.1:") for port in rabbitmq.get("ports", []))


def test_workers_restart_scale_and_share_the_store(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker = services["worker"]

    assert worker["restart"] in {"on-failure", "unless-stopped", "always"}
    assert worker["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N must work
    assert worker["init"] is True
    env = worker["environment"]
    broker = urlsplit(env["BGHTTP_BROKER_URL"])
    assert broker.scheme == "amqp" and broker.hostname == "rabbitmq"
    assert env["BGHTTP_QUEUE_TYPE"] == "quorum"  # the fleet runs on quorum queues
    assert broker.username == services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_USER"]
    store_mount = _volume_targets(worker)["/data"]
    assert store_mount in compose["volumes"]
    assert Path(env["BGHTTP_STORE_DIR"]).is_relative_to("/data")
    # The CLI service sees the same store and broker as the workers.
    cli = services["cli"]
    assert _volume_targets(cli)["/data"] == store_mount and cli["environment"] == env
    assert cli["entrypoint"] == ["bghttp"] and "profiles" in cli
    # The worker command is a valid `bghttp worker` command line, metrics on.
    args = build_parser().parse_args(worker["command"])
    assert args.command == "worker" and args.metrics_port == 9191 and args.processes >= 1
    assert "9191" in [str(port) for port in worker["expose"]]


def test_build_context_and_dockerfile_match(compose: dict[str, Any]) -> None:
    build = compose["services"]["worker"]["build"]
    context = (DOCKER / build["context"]).resolve()
    assert context == PROJECT_ROOT.resolve()
    assert (context / build["dockerfile"]).is_file()


def _instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_runs_as_a_non_root_user_with_the_cli_as_entrypoint() -> None:
    instructions = _instructions()
    final_stage = instructions[max(i for i, (name, _) in enumerate(instructions) if name == "FROM") :]

    users = [value for name, value in final_stage if name == "USER"]
    assert users and users[-1] not in {"root", "0"} and not users[-1].startswith("0:")
    user_at = max(i for i, (name, _) in enumerate(final_stage) if name == "USER")
    created = " ".join(value for name, value in final_stage[:user_at] if name == "RUN")
    assert "useradd" in created and users[-1] in shlex.split(created)
    entrypoint = json.loads(dict(final_stage)["ENTRYPOINT"])  # exec form: signals reach the CLI
    assert entrypoint == ["bghttp"]
    cmd = json.loads(dict(final_stage)["CMD"])
    assert build_parser().parse_args(cmd).command == "worker"
    assert json.loads(dict(final_stage)["VOLUME"]) == ["/data"]
    for name, value in instructions:
        if name == "COPY" and not value.startswith("--from"):
            for source in shlex.split(value)[:-1]:
                assert (PROJECT_ROOT / source).exists(), source


def _old_option_names(argv: list[str]) -> list[str]:
    """Options of a ``bghttp`` command line given by an older name (``--threads`` for ``--max-in-flight``)."""
    import argparse

    parser = build_parser()
    parser.parse_args(argv)  # a valid command line first
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    command = next(word for word in argv if word in commands.choices)
    options = commands.choices[command]._option_string_actions
    old = []
    for word in argv:
        name = word.split("=", 1)[0]
        if name.startswith("--") and name in options:
            long_names = [option for option in options[name].option_strings if option.startswith("--")]
            if name != long_names[0]:
                old.append(name)
    return old


def _readme_bghttp_commands() -> list[list[str]]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```$", readme, re.M | re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["bghttp"]:
                commands.append(list(itertools.takewhile(lambda word: word not in {"&", "|", ">", ";"}, words[1:])))
    return commands


def test_the_readme_dockerfile_and_compose_use_todays_option_names(compose: dict[str, Any]) -> None:
    cmd = json.loads(dict(_instructions())["CMD"])
    command_lines = {"compose worker": compose["services"]["worker"]["command"], "Dockerfile CMD": cmd}
    command_lines.update({f"README: bghttp {' '.join(words)}": words for words in _readme_bghttp_commands()})
    assert any(words[0] == "worker" for words in command_lines.values())
    assert {where: _old_option_names(words) for where, words in command_lines.items() if _old_option_names(words)} == {}


def test_the_compose_files_references_point_at_sections_that_exist() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    references = re.findall(r"(docs/[a-z_]+\.md)#([a-z0-9-]+)", text)
    assert references, "compose.yaml points at the operations guide"
    for page, anchor in references:
        headings = re.findall(r"^#+ (.+)$", (PROJECT_ROOT / page).read_text(), re.M)
        anchors = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-") for heading in headings}
        assert anchor in anchors, (page, anchor)
    assert not re.search(r'README "', text)  # the README has no such sections: point at docs/ pages
