"""Output files that appear all together or not at all (mlcdseg.atomic_files)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlcdseg import atomic_files
from mlcdseg.atomic_files import AtomicFiles, write_files_atomically


def names_in(folder: Path) -> list[str]:
    """Every entry of the folder, hidden ones too (a run must leave none behind)."""
    return sorted(path.name for path in folder.iterdir())


def test_files_replace_the_old_ones_only_when_the_block_ends(tmp_path: Path):
    (tmp_path / "report.json").write_text("old")

    with AtomicFiles(tmp_path) as files:
        files.open("report.json").write("new")
        files.open("mask.png", "wb").write(b"\x89PNG")
        assert (tmp_path / "report.json").read_text() == "old"  # not yet in place
        assert not (tmp_path / "mask.png").exists()

    assert (tmp_path / "report.json").read_text() == "new"
    assert (tmp_path / "mask.png").read_bytes() == b"\x89PNG"
    assert names_in(tmp_path) == ["mask.png", "report.json"]


def test_a_failure_mid_way_leaves_no_new_file_and_keeps_the_old_one(tmp_path: Path):
    (tmp_path / "report.json").write_text("new")

    with pytest.raises(RuntimeError), AtomicFiles(tmp_path) as files:
        files.open("report.json").write("half")
        files.open("samples.csv").write("task_id\n")
        raise RuntimeError("boom")

    assert names_in(tmp_path) == ["report.json"]
    assert (tmp_path / "report.json").read_text() == "new"


def test_a_failed_run_removes_the_folders_it_created(tmp_path: Path):
    with pytest.raises(RuntimeError), AtomicFiles(tmp_path / "new" / "out") as files:
        files.open("samples.csv").write("x")
        raise RuntimeError("boom")

    assert names_in(tmp_path) == []


def test_a_failed_run_keeps_a_folder_that_was_there(tmp_path: Path):
    (tmp_path / "out").mkdir()

    with pytest.raises(RuntimeError), AtomicFiles(tmp_path / "out") as files:
        files.open("samples.csv").write("x")
        raise RuntimeError("boom")

    assert names_in(tmp_path) == ["out"] and names_in(tmp_path / "out") == []


def test_text_is_utf8_with_newlines_as_written(tmp_path: Path):
    with AtomicFiles(tmp_path) as files:
        files.open("samples.csv").write("a,b\r\n“é”,2\n")

    assert (tmp_path / "samples.csv").read_bytes() == "a,b\r\n“é”,2\n".encode()


def test_files_are_readable_by_everyone(tmp_path: Path):
    write_files_atomically(tmp_path, {"instances.json": b"{}"})
    with AtomicFiles(tmp_path) as files:
        files.open("report.json").write("{}")

    for name in ("instances.json", "report.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_opening_a_name_twice_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="already open"), AtomicFiles(tmp_path) as files:
        files.open("report.json")
        files.open("report.json")

    assert names_in(tmp_path) == []


def test_write_files_atomically_takes_bytes_or_chunks_and_returns_the_paths_in_order(tmp_path: Path):
    target = tmp_path / "root" / "refcoco"

    paths = write_files_atomically(target, {"b.json": [b"[1", b",2]"], "a.json": b"1"})

    assert paths == [target / "b.json", target / "a.json"]
    assert (target / "b.json").read_bytes() == b"[1,2]" and (target / "a.json").read_bytes() == b"1"


def test_a_failing_write_leaves_no_file_and_no_new_folder(tmp_path: Path):
    target = tmp_path / "root" / "refcoco"

    with pytest.raises(TypeError):
        write_files_atomically(target, {"instances.json": b"{}", "refs(unc).p": None})

    assert list(tmp_path.iterdir()) == []
    assert write_files_atomically(target, {"a.json": b"1"}) == [target / "a.json"]
    assert (target / "a.json").read_bytes() == b"1" and [p.name for p in target.iterdir()] == ["a.json"]


def test_chunks_that_fail_half_way_keep_the_previous_file(tmp_path: Path):
    (tmp_path / "tasks.json").write_bytes(b"[]\n")

    def chunks() -> Iterator[bytes]:
        yield b"[{"
        raise ValueError("a task cannot be encoded")

    with pytest.raises(ValueError, match="cannot be encoded"):
        write_files_atomically(tmp_path, {"tasks.json": chunks()})

    assert names_in(tmp_path) == ["tasks.json"] and (tmp_path / "tasks.json").read_bytes() == b"[]\n"


def test_a_failing_rename_removes_the_files_not_yet_in_place(tmp_path: Path):
    (tmp_path / "b.json").mkdir()  # os.replace cannot put a file over a folder

    with pytest.raises(OSError):
        write_files_atomically(tmp_path, {"b.json": b"2", "c.json": b"3"})

    assert names_in(tmp_path) == ["b.json"] and (tmp_path / "b.json").is_dir()


def test_an_error_names_the_destination_not_the_temporary_file(tmp_path: Path):
    (tmp_path / "b.json").mkdir()

    with pytest.raises(IsADirectoryError) as raised:
        write_files_atomically(tmp_path, {"b.json": b"2"})

    assert raised.value.filename == str(tmp_path / "b.json") and raised.value.filename2 is None
    assert ".tmp" not in str(raised.value)


def test_a_folder_nothing_can_be_created_in_is_named_with_the_destination(unwritable_dir: Path):
    with pytest.raises(OSError) as raised:
        write_files_atomically(unwritable_dir, {"mask.png": b"\x89PNG"})

    assert raised.value.filename == str(unwritable_dir / "mask.png")
    assert ".tmp" not in str(raised.value)


@pytest.mark.parametrize("output", ["taken.png", "taken.png/sub"])
def test_a_file_where_the_folder_must_be_is_named_plainly(tmp_path: Path, output: str):
    (tmp_path / "taken.png").write_bytes(b"\x89PNG")
    directory = tmp_path / output
    where = "it" if output == "taken.png" else str(tmp_path / "taken.png")

    with pytest.raises(NotADirectoryError) as raised, AtomicFiles(directory):
        pass

    assert str(raised.value) == f"cannot write into {directory}: {where} is not a directory"
    assert (tmp_path / "taken.png").read_bytes() == b"\x89PNG"


# ---------------------------------------------------------------- a run's outputs as one set
def _two_runs(tmp_path: Path) -> None:
    write_files_atomically(tmp_path, {"report.json": b"old report", "samples.csv": b"old samples"})


def test_a_rename_failing_half_way_puts_the_previous_set_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _two_runs(tmp_path)
    real_replace, calls = os.replace, []

    def replace_then_fail(source, destination):
        calls.append(destination)
        if len(calls) == 2:
            raise OSError(errno.EIO, "simulated failure between two renames")
        return real_replace(source, destination)

    monkeypatch.setattr(atomic_files.os, "replace", replace_then_fail)
    with pytest.raises(OSError, match="simulated failure"):
        write_files_atomically(tmp_path, {"samples.csv": b"new samples", "report.json": b"new report", "x.html": b"x"})
    monkeypatch.setattr(atomic_files.os, "replace", real_replace)

    assert names_in(tmp_path) == ["report.json", "samples.csv"]
    assert (tmp_path / "report.json").read_bytes() == b"old report"
    assert (tmp_path / "samples.csv").read_bytes() == b"old samples"


def _killed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, while_renaming: bool) -> None:
    """A run killed (no cleanup of any kind) while writing its files, or after the first rename."""

    class Killed(BaseException):
        pass

    real_replace, calls = os.replace, []

    def replace_until_killed(source, destination):
        if calls:
            raise Killed
        calls.append(destination)
        return real_replace(source, destination)

    monkeypatch.setattr(atomic_files.os, "replace", replace_until_killed)
    monkeypatch.setattr(atomic_files.AtomicFiles, "_undo", lambda self, *args: None)  # a kill runs no code
    monkeypatch.setattr(atomic_files.AtomicFiles, "_discard", lambda self: None)
    files = atomic_files.AtomicFiles(tmp_path).__enter__()
    files.open("samples.csv", "wb").write(b"new samples")
    files.open("report.json", "wb").write(b"new report")
    if while_renaming:
        with pytest.raises(Killed):
            files.__exit__(None, None, None)
    os.close(files._lock)  # the process is gone, and its lock with it
    monkeypatch.undo()


def test_a_run_killed_between_renames_is_completed_by_the_next_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _two_runs(tmp_path)
    _killed_run(tmp_path, monkeypatch, while_renaming=True)
    assert (tmp_path / "samples.csv").read_bytes() == b"new samples"  # the window a kill can leave

    write_files_atomically(tmp_path, {"other.json": b"{}"})  # any next run in this folder

    assert names_in(tmp_path) == ["other.json", "report.json", "samples.csv"]
    assert (tmp_path / "report.json").read_bytes() == b"new report"
    assert (tmp_path / "samples.csv").read_bytes() == b"new samples"


def test_a_run_killed_before_its_commit_leaves_the_previous_set_and_its_leftovers_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _two_runs(tmp_path)
    _killed_run(tmp_path, monkeypatch, while_renaming=False)
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")]  # its staging folder

    write_files_atomically(tmp_path, {"other.json": b"{}"})

    assert names_in(tmp_path) == ["other.json", "report.json", "samples.csv"]
    assert (tmp_path / "report.json").read_bytes() == b"old report"


def test_a_live_run_in_the_same_folder_is_left_alone(tmp_path: Path):
    with AtomicFiles(tmp_path) as slow:
        slow.open("report.json").write("slow run")
        write_files_atomically(tmp_path, {"samples.csv": b"quick run"})  # cleans up only stale runs
    assert (tmp_path / "report.json").read_text() == "slow run"
    assert names_in(tmp_path) == ["report.json", "samples.csv"]
