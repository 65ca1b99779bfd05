"""Threat model of the local-process provider's files and processes (real files, real processes).

Who attacks: another local user or process that can plant files where the provider keeps its
state (a symlink where a directory or log is expected), and the shell a command happens to run
from (its environment, its working directory). What must hold:

================================================  =============================================
attack                                            what must happen
================================================  =============================================
``revisions/<id>`` replaced by a symlink to a     archive refuses ("is a symlink"), deletes
directory                                         nothing, even with ``keep_logs``
a planted ``stdout.log`` symlink                  warm refuses; the target is not appended to
a symlinked ``router/`` directory                 traffic refuses; no table, token or owner file
                                                  lands in the target
a new ``state_dir`` under umask 000               it and its missing parents are created 0700
a relative ``state_dir``                          made absolute by ``env init``; a relative one
                                                  recorded by hand is refused at the first call
the caller's environment (``AWS_SECRET_...``)     not passed to revision processes unless the
                                                  ``pass_env`` answer names it; what is passed
                                                  is recorded at stage, so a warm or reconcile
                                                  from another shell starts the same process
================================================  =============================================
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Iterator

import pytest

from greentic_core import ProviderError
from greentic_local_process import processes

from test_provider import ENV_ID, LP

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def lp(tmp_path: Path) -> Iterator[LP]:
    env = LP(tmp_path)
    try:
        yield env
    finally:
        assert not env.close()


def victim(tmp_path: Path) -> Path:
    target = tmp_path / "victim"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    (target / "stdout.log").write_text("not yours")
    return target


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


# --------------------------------------------------------------------------- symlinks


@pytest.mark.parametrize("keep_logs", [True, False])
def test_archive_of_a_symlinked_revision_directory_deletes_nothing(tmp_path: Path, keep_logs: bool) -> None:
    lp = LP(tmp_path, keep_logs=keep_logs)
    try:
        rid = lp.stage()
        target = victim(tmp_path)
        directory = lp.revision_dir(rid)
        for entry in directory.iterdir():
            entry.unlink()
        directory.rmdir()
        directory.symlink_to(target, target_is_directory=True)
        with pytest.raises(ProviderError, match="is a symlink"):
            lp.op.archive(ENV_ID, rid)
        assert sorted(p.name for p in target.iterdir()) == ["precious.txt", "stdout.log"]
        assert (target / "precious.txt").read_text() == "keep me"
        directory.unlink()  # the planted link (teardown would refuse it too)
    finally:
        assert not lp.close()


def test_a_symlinked_revisions_directory_is_refused(lp: LP, tmp_path: Path) -> None:
    rid = lp.stage()
    target = victim(tmp_path)
    revisions = lp.state / "revisions"
    os.rename(revisions, tmp_path / "moved")
    revisions.symlink_to(target, target_is_directory=True)
    with pytest.raises(ProviderError, match="is a symlink"):
        lp.op.archive(ENV_ID, rid)
    assert sorted(p.name for p in target.iterdir()) == ["precious.txt", "stdout.log"]
    revisions.unlink()
    os.rename(tmp_path / "moved", revisions)


def test_a_planted_log_symlink_is_not_appended_through(lp: LP, tmp_path: Path) -> None:
    rid = lp.stage()
    target = tmp_path / "elsewhere.log"
    target.write_text("untouched\n")
    (lp.revision_dir(rid) / "stdout.log").symlink_to(target)
    with pytest.raises(ProviderError, match="stdout.log"):
        lp.op.warm(ENV_ID, rid)
    assert target.read_text() == "untouched\n"
    assert lp.record(rid) is None  # nothing was started


def test_a_symlinked_router_directory_receives_nothing(lp: LP, tmp_path: Path) -> None:
    rid = lp.warmed()
    target = tmp_path / "router-target"
    target.mkdir()
    (lp.state / "router").symlink_to(target, target_is_directory=True)
    with pytest.raises(ProviderError, match="is a symlink"):
        lp.traffic((rid, 10000))
    assert list(target.iterdir()) == []
    (lp.state / "router").unlink()
    assert lp.router_state() is None


# --------------------------------------------------------------------------- state_dir


def test_a_new_state_dir_and_its_parents_are_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        lp = LP(tmp_path, state_dir=str(tmp_path / "a" / "b" / "state"))
        try:
            lp.state = tmp_path / "a" / "b" / "state"
            rid = lp.stage()
            for path in (tmp_path / "a", tmp_path / "a" / "b", lp.state, lp.state / "revisions", lp.revision_dir(rid)):
                assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
            env_file = lp.revision_dir(rid) / processes.ENVIRONMENT_FILE
            assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        finally:
            assert not lp.close()
    finally:
        os.umask(old)


def test_a_relative_state_dir_is_made_absolute_at_env_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    lp = LP(tmp_path, state_dir="relative-state")
    try:
        answers = json.loads((lp.store.env_dir(ENV_ID) / "env-packs" / "deployer" / "answers.json").read_text())
        assert answers["state_dir"] == str(tmp_path / "relative-state")
        lp.state = tmp_path / "relative-state"
        monkeypatch.chdir("/")
        rid = lp.stage()
        assert lp.revision_dir(rid).is_dir()
    finally:
        assert not lp.close()


def test_a_relative_state_dir_recorded_by_hand_is_refused(lp: LP) -> None:
    path = lp.store.env_dir(ENV_ID) / "env-packs" / "deployer" / "answers.json"
    answers = json.loads(path.read_text())
    path.write_text(json.dumps({**answers, "state_dir": "relative"}))
    with pytest.raises(ProviderError, match="is relative"):
        lp.stage()


# --------------------------------------------------------------------------- process environment


def test_revision_processes_get_an_explicit_recorded_environment(lp: LP, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-calling-shell")
    monkeypatch.setenv("LANG", "C.UTF-8")
    rid = lp.stage(APP_SETTING="from-workload")
    recorded = json.loads((lp.revision_dir(rid) / processes.ENVIRONMENT_FILE).read_text())
    assert "AWS_SECRET_ACCESS_KEY" not in recorded and recorded["LANG"] == "C.UTF-8"
    # another shell warms it: a different LANG, a new secret; the recorded environment wins
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.setenv("OTHER_SHELL_ONLY", "x")
    lp.op.warm(ENV_ID, rid)
    seen = environ_of(lp.pid(rid))
    assert seen["LANG"] == "C.UTF-8" and seen["APP_SETTING"] == "from-workload"
    assert "AWS_SECRET_ACCESS_KEY" not in seen and "OTHER_SHELL_ONLY" not in seen
    assert seen["GREENTIC_REVISION_ID"] == rid and "PORT" in seen


def test_pass_env_answer_names_what_is_passed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_TOKEN", "t1")
    monkeypatch.setenv("APP_REGION", "eu")
    monkeypatch.setenv("HOME", "/nonexistent-home")
    lp = LP(tmp_path, pass_env=["PATH", "APP_*"])
    try:
        rid = lp.warmed()
        seen = environ_of(lp.pid(rid))
        assert seen["APP_TOKEN"] == "t1" and seen["APP_REGION"] == "eu"
        assert "HOME" not in seen
    finally:
        assert not lp.close()


@pytest.mark.parametrize("verb", ["archive", "drain"])
def test_a_refused_symlink_leaves_a_running_revision_supervised(lp: LP, tmp_path: Path, verb: str) -> None:
    from greentic_local_process import supervision

    rid = lp.warmed()
    desired = supervision.desired(lp.state)
    directory = lp.revision_dir(rid)
    os.rename(directory, tmp_path / "moved")
    directory.symlink_to(victim(tmp_path), target_is_directory=True)
    with pytest.raises(ProviderError, match="is a symlink"):
        getattr(lp.op, verb)(ENV_ID, rid)
    assert supervision.desired(lp.state) == desired  # nothing changed at the provider
    directory.unlink()
    os.rename(tmp_path / "moved", directory)
