"""Symlinks and store ownership (issue 21, item 7): another local user cannot redirect the store's writes.

bghttp used a store root that was world-writable or another user's as it found
it, and followed symlinks in it: another user swapped ``responses/`` and
``locks/`` and root's next request wrote its response body into a root-only
file elsewhere and created lock files in a root-only directory. Now a store
root (or store directory) that is not the user's own, or is writable by others,
is refused in one line; every store file is opened with ``O_NOFOLLOW`` (and
``O_EXCL`` where it must be new); missing parents are created 0700.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, ConfigError, Settings, StoreError
from bghttp.store import ID_LOCK_STRIPES
from tests.cli.helpers import assert_one_line_error, bghttp_command, cli_env
from tests.conftest import settings_env
from tests.reliability.server import CountingServer
from tests.support import PROJECT_ROOT, WorkerProcess, wait_until

pytestmark = [pytest.mark.rabbitmq]


@pytest.fixture
def other_user() -> int:
    if os.geteuid() != 0:
        pytest.skip("needs root, to act as a second user")
    return pwd.getpwnam("nobody").pw_uid


@pytest.fixture
def shared_base() -> Iterator[Path]:
    """A directory another user can pass through (pytest's tmp_path is root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="bghttp-owner-"))
    os.chmod(base, 0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _as_user(uid: int, code: str) -> None:
    def drop() -> None:
        os.setgid(uid)  # nobody's uid is also a free gid on Debian (nogroup differs; any non-root gid does)
        os.setuid(uid)

    subprocess.run(["/usr/bin/python3", "-c", code], check=True, preexec_fn=drop, timeout=30)


def test_a_store_root_writable_by_others_or_owned_by_another_user_is_refused_in_one_line(
    rabbitmq_settings: Settings, shared_base: Path, other_user: int
) -> None:
    root = shared_base / "store"
    root.mkdir()
    os.chmod(root, 0o777)
    result = subprocess.run(
        [*bghttp_command(), "post", "http://127.0.0.1:9/x", "-d", "a=1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(rabbitmq_settings, {"BGHTTP_STORE_DIR": str(root)}),
        cwd=PROJECT_ROOT,
    )
    assert_one_line_error(result, 2)
    assert "writable by other users" in result.stderr
    assert os.listdir(root) == []
    os.chmod(root, 0o700)
    os.chown(root, other_user, other_user)
    with pytest.raises(ConfigError, match="owned by another user"):
        BackgroundHttpClient(dataclasses.replace(rabbitmq_settings, store_dir=root))


def test_a_worker_refuses_a_store_others_may_write_at_start_in_one_line(
    rabbitmq_settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    root.mkdir()
    os.chmod(root, 0o777)
    settings = dataclasses.replace(rabbitmq_settings, store_dir=root)
    log = tmp_path / "worker.log"
    worker = WorkerProcess(settings_env(settings), processes=1, threads=1, log_path=log)
    try:
        with pytest.raises(RuntimeError, match="exited early"):
            worker.wait_ready()
    finally:
        worker.stop()
    assert "Traceback" not in log.read_text()
    assert f"BGHTTP_STORE_DIR {root}: {root} is writable by other users" in log.read_text()
    assert os.listdir(root) == []


def test_missing_parents_are_created_private_whatever_the_umask(rabbitmq_settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "store"
    result = subprocess.run(
        [*bghttp_command(), "post", "http://127.0.0.1:9/x", "-d", "a=1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(rabbitmq_settings, {"BGHTTP_STORE_DIR": str(root)}),
        cwd=PROJECT_ROOT,
        preexec_fn=lambda: os.umask(0),
    )
    assert result.returncode == 0, result.stderr
    for directory in (tmp_path / "a", tmp_path / "a" / "b", root, root / "requests", root / "locks"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def _laid_out_store(settings: Settings) -> None:
    with BackgroundHttpClient(settings) as client:
        client.post("http://127.0.0.1:9/x", data=b"first", request_id="first")


def test_a_store_whose_directories_others_may_write_or_swapped_is_refused(
    rabbitmq_settings: Settings, shared_base: Path, other_user: int
) -> None:
    settings = dataclasses.replace(rabbitmq_settings, store_dir=shared_base / "store")
    secret = shared_base / "secret"  # root's alone
    secret.mkdir(mode=0o700)
    _laid_out_store(settings)
    os.chmod(settings.store_dir / "locks", 0o777)
    with pytest.raises(ConfigError, match="locks is writable by other users"):
        BackgroundHttpClient(settings)
    os.chmod(settings.store_dir / "locks", 0o700)
    # A root left writable for a moment: the other user swaps responses/ for a symlink.
    os.chmod(settings.store_dir, 0o777)
    responses = settings.store_dir / "responses"
    _as_user(other_user, f"import os; os.rename({str(responses)!r}, {str(responses)!r} + '.old')")
    os.chmod(settings.store_dir, 0o700)
    os.symlink(secret, responses)  # as the other user would have (root's own hand here: same link)
    with pytest.raises(ConfigError, match="responses is a symlink"):
        BackgroundHttpClient(settings)
    assert os.listdir(secret) == []


def test_symlinks_another_user_planted_are_not_followed(
    rabbitmq_settings: Settings,
    shared_base: Path,
    other_user: int,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    settings = dataclasses.replace(rabbitmq_settings, store_dir=shared_base / "store")
    secret = shared_base / "secret"  # root's alone
    secret.mkdir(mode=0o700)
    _laid_out_store(settings)
    # The store's directories were writable by everyone for a while; the other user planted
    # symlinks then. The operator made them private again; the symlinks stay.
    for name in ("responses", "locks", ""):
        os.chmod(settings.store_dir / name, 0o777)
    stripe = zlib.crc32(b"victim-lock") % ID_LOCK_STRIPES
    plants = {
        settings.store_dir / "responses" / "victim.body.part": secret / "body",
        settings.store_dir / "responses" / "victim.body": secret / "body-final",
        settings.store_dir / "responses" / "victim.meta.log": secret / "meta",
        settings.store_dir / "locks" / f"ids.{stripe:02d}.lock": secret / "lock",
    }
    _as_user(other_user, "".join(f"import os; os.symlink({str(t)!r}, {str(p)!r})\n" for p, t in plants.items()))
    for name in ("responses", "locks", ""):
        os.chmod(settings.store_dir / name, 0o700)
    start_worker(settings)
    with BackgroundHttpClient(settings) as client:
        with pytest.raises(StoreError, match="lock file"):
            client.post(counting_server.url("/ok?id=victim-lock"), request_id="victim-lock")
        client.get(counting_server.url("/ok?id=victim"), request_id="victim", headers={"Authorization": "Bearer s3"})
        wait_until(lambda: counting_server.hits["victim"] >= 1, timeout=60)
        wait_until(lambda: client.get_request_status("victim").phase.value != "running", timeout=60)  # type: ignore[union-attr]
    assert os.listdir(secret) == [], "a write went through a planted symlink"


def test_a_store_under_a_directory_another_user_controls_is_refused(
    rabbitmq_settings: Settings, shared_base: Path, other_user: int
) -> None:
    """The root and its own directories were checked, not the path to them. A store whose
    parent another user owns (or reached through that user's symlink) is theirs to swap:
    they rename it away while root's client runs and put their own directory, or a
    symlink to one, in its place; root's next request file (``Authorization`` included)
    is written there. The walk from ``/`` to the store is checked like ssh's StrictModes."""
    theirs = shared_base / "theirs"
    theirs.mkdir()
    os.chown(theirs, other_user, other_user)
    os.chmod(theirs, 0o755)
    root = theirs / "store"
    result = subprocess.run(
        [*bghttp_command(), "post", "http://127.0.0.1:9/x", "-d", "a=1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(rabbitmq_settings, {"BGHTTP_STORE_DIR": str(root)}),
        cwd=PROJECT_ROOT,
    )
    assert_one_line_error(result, 2)
    assert f"{theirs} is owned by another user" in result.stderr
    assert not root.exists()
    # The same store made by root beforehand, under the other user's directory: refused too.
    root.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match=f"{theirs} is owned by another user"):
        BackgroundHttpClient(dataclasses.replace(rabbitmq_settings, store_dir=root))
    # A root-owned store reached through the other user's symlink (in a sticky, world-writable
    # directory, where its owner may delete and re-point it at will).
    mine = shared_base / "mine"
    mine.mkdir(mode=0o700)
    os.chmod(shared_base, 0o1777)
    link = shared_base / "link"
    _as_user(other_user, f"import os; os.symlink({str(mine)!r}, {str(link)!r})")
    with pytest.raises(ConfigError, match=f"{link} is a symlink owned by another user"):
        BackgroundHttpClient(dataclasses.replace(rabbitmq_settings, store_dir=link))
    # Root's own symlink to root's own store, in that same sticky directory, is the operator's choice.
    os.symlink(mine, shared_base / "my-link")
    BackgroundHttpClient(dataclasses.replace(rabbitmq_settings, store_dir=shared_base / "my-link")).close()


def test_a_planted_removed_directory_is_refused_before_gc_deletes_through_it(
    rabbitmq_settings: Settings, shared_base: Path, other_user: int
) -> None:
    """``removed/`` (the marks ``delete`` leaves) was not among the checked store directories.
    Planted as a symlink while the root was writable, it survived the root being made
    private again: each removal created its mark in the directory it points at, and
    ``bghttp gc`` unlinked every file older than 7 days there (its "old marks")."""
    settings = dataclasses.replace(rabbitmq_settings, store_dir=shared_base / "store")
    secret = shared_base / "secret"  # root's alone, with a file a month old
    secret.mkdir(mode=0o700)
    keep = secret / "config"
    keep.write_text("root's own\n")
    month_ago = time.time() - 30 * 86400
    os.utime(keep, (month_ago, month_ago))
    _laid_out_store(settings)
    os.chmod(settings.store_dir, 0o777)
    _as_user(other_user, f"import os; os.symlink({str(secret)!r}, {str(settings.store_dir / 'removed')!r})")
    os.chmod(settings.store_dir, 0o700)
    result = subprocess.run(
        [*bghttp_command(), "gc", "--older-than", "0s"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(settings),
        cwd=PROJECT_ROOT,
    )
    assert keep.exists(), "gc deleted a file through a planted symlink"
    assert os.listdir(secret) == ["config"]
    assert_one_line_error(result, 2)
    assert "removed is a symlink" in result.stderr
