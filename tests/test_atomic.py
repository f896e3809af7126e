"""Durability of `amoseg.atomic`: data reaches the disk before the rename, the rename after."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amoseg import atomic


@pytest.fixture
def calls(monkeypatch) -> list[tuple[str, str]]:
    """Records ('fsync', path) and ('replace', target) in the order they happen."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_open, real_replace = os.fsync, os.open, os.replace
    names: dict[int, str] = {}

    def opening(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        names[fd] = str(path)
        return fd

    def fsync(fd):
        seen.append(("fsync", names.get(fd, "?")))
        return real_fsync(fd)

    def replace(src, dst):
        seen.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "open", opening)
    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    return seen


def test_file_is_fsynced_before_the_rename_and_its_folder_after(tmp_path, calls):
    target = tmp_path / "splits.json"
    atomic.write_json(target, {"train": ["a"]})
    kinds = [(kind, Path(p).name if kind == "replace" else p) for kind, p in calls]
    replace_at = kinds.index(("replace", "splits.json"))
    before = [p for kind, p in calls[:replace_at] if kind == "fsync"]
    after = [p for kind, p in calls[replace_at + 1 :] if kind == "fsync"]
    assert any(Path(p).name.startswith(".splits.json.") for p in before), calls
    assert str(tmp_path) in after, calls
    assert atomic.read_json(target) == {"train": ["a"]}


def test_folder_contents_are_fsynced_before_the_folder_is_renamed(tmp_path, calls):
    target = tmp_path / "cases" / "amos_0001"
    with atomic.atomic_dir(target) as tmp:
        (tmp / "image.npy").write_bytes(b"x" * 10)
        (tmp / "meta.json").write_text("{}")
    replace_at = [kind for kind, _ in calls].index("replace")
    synced = {Path(p).name for kind, p in calls[:replace_at] if kind == "fsync"}
    assert {"image.npy", "meta.json"} <= synced, calls
    assert str(target.parent) in [p for kind, p in calls[replace_at + 1 :] if kind == "fsync"]
    assert sorted(p.name for p in target.iterdir()) == ["image.npy", "meta.json"]


def test_a_device_or_folder_is_never_replaced_by_an_output_file(tmp_path):
    """`--json /dev/null` must not swap the device for a plain file (a rename would)."""
    from amoseg.errors import AmosegError

    fifo = tmp_path / "pipe"  # a special file like /dev/null, without risking the real one
    os.mkfifo(fifo)
    for target in (fifo, tmp_path):
        before = os.stat(target)
        with pytest.raises(AmosegError, match="not a regular file"):
            atomic.write_text(target, "x")
        after = os.stat(target)
        assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


@pytest.mark.parametrize(
    "error",
    [PermissionError(13, "Permission denied"), OSError(30, "Read-only file system")],
    ids=["EACCES", "EROFS"],
)
def test_an_unwritable_existing_folder_is_one_clear_error(tmp_path, monkeypatch, error):
    """The folder exists, so mkdir succeeds; the temp file's creation is what fails (running as
    root, chmod cannot block it: the temp-file call is made to fail as the kernel would; the
    matrix's ro-tmpfs rows check the real thing where mounting is allowed)."""
    from amoseg.errors import AmosegError

    def refuse(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(AmosegError, match="cannot write into the output folder") as caught:
        atomic.write_json(tmp_path / "plan.json", {})
    assert caught.value.path == tmp_path
    assert list(tmp_path.iterdir()) == []
