"""Output files that appear as one set: all of a run's files, or the previous ones.

What "together" can mean on POSIX: a rename replaces one name atomically, but no system call
renames several names at once (short of swapping the whole folder, which would take along the
files the user keeps there, or of turning every output into a symlink). So a run

1. writes every file into a fresh staging folder inside the destination, `.mlcdseg-staging-*`
   (same file system, so the renames below are atomic), locked (flock) while the run lives;
2. commits: hard-links the previous outputs into the staging folder (the undo copy), writes the
   list of names there (the commit record), then renames each file into place;
3. removes the staging folder.

An error before the commit record leaves the previous outputs untouched; an error during the
renames puts the previous ones back from the undo copy. A run killed outright (SIGKILL, power
loss) cannot clean up: the next run in the same folder finds its unlocked staging folder and
finishes it: without a commit record it is deleted (the previous outputs stayed in place), with
one the remaining renames are done (the killed run's outputs are complete). Between a kill in the
renames (a window of microseconds) and that next run the folder can hold a mix; readers never
see a half-written file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

#: Mode of the written files: readable by everyone, like a file `open()` makes under the usual
#: umask (mkstemp's 0600 would hide a shared dataset or report from other users).
FILE_MODE = 0o644
STAGING_PREFIX = ".mlcdseg-staging-"
_FILES, _UNDO, _COMMIT_RECORD = "files", "undo", "commit.json"


class AtomicFiles:
    """A context manager whose opened files replace `directory/name`, as one set, on a clean exit.

    with AtomicFiles(outdir) as files:
        files.open("report.json").write(text)          # text: UTF-8, no newline translation
        files.open("mask.png", "wb").write(png_bytes)  # bytes

    Entering creates the directory and missing parents, and finishes what killed runs left in
    it. A clean exit closes every stream and moves the files into place (see the module
    docstring); an exception (in the block, or while closing or renaming) leaves the previous
    outputs as they were, removes the staging folder and the folders this run created when they
    are empty, and propagates.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).absolute()
        self._streams: dict[str, IO[Any]] = {}
        self._created_folders: list[Path] = []
        self._staging: Path | None = None
        self._lock: int | None = None  # descriptor of the staging folder, flock-ed

    def __enter__(self) -> AtomicFiles:
        # Deepest first, the order they are removed in.
        self._created_folders = [folder for folder in (self.directory, *self.directory.parents) if not folder.exists()]
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as error:  # a file where a folder must be
            blocking = next(folder for folder in (self.directory, *self.directory.parents) if os.path.lexists(folder))
            where = "it" if blocking == self.directory else str(blocking)
            raise NotADirectoryError(f"cannot write into {self.directory}: {where} is not a directory") from error
        finish_killed_runs(self.directory)
        return self

    def open(self, name: str, mode: Literal["w", "wb"] = "w") -> IO[Any]:
        """A new stream that will become `directory/name`: text (UTF-8, newline="") for "w", bytes for "wb"."""
        if name in self._streams:
            raise ValueError(f"{name} is already open in {self.directory}")
        if not name or os.sep in name or name in (".", ".."):
            raise ValueError(f"{name!r} is not a file name")
        with _reported_as(self.directory / name):
            staging = self._staging_folder()
            descriptor = os.open(staging / _FILES / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            os.fchmod(descriptor, FILE_MODE)  # whatever the umask
            stream = open(descriptor, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {}))
        except BaseException:
            os.close(descriptor)
            raise
        self._streams[name] = stream
        return stream

    def __exit__(
        self, error_type: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if error_type is not None:
            self._discard()
            return
        try:
            for name, stream in self._streams.items():
                with _reported_as(self.directory / name):
                    stream.close()  # a full disk may only show here, when the buffer is flushed
            if self._staging is not None:
                self._commit(self._staging)
        except BaseException:
            self._discard()
            raise
        self._release()

    def _staging_folder(self) -> Path:
        """This run's staging folder, created and locked on first use."""
        if self._staging is None:
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.directory))
            self._lock = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)  # held until the run ends
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            (staging / _FILES).mkdir()
            (staging / _UNDO).mkdir()
            self._staging = staging
        return self._staging

    def _commit(self, staging: Path) -> None:
        """Move the staged files into place; on an error, put the previous ones back."""
        names = list(self._streams)
        for name in names:
            _keep_undo_copy(self.directory / name, staging / _UNDO / name)
        (staging / _COMMIT_RECORD).write_text(json.dumps(names), encoding="utf-8")
        placed: list[str] = []
        try:
            for name in names:
                with _reported_as(self.directory / name):
                    os.replace(staging / _FILES / name, self.directory / name)
                placed.append(name)
        except BaseException:
            self._undo(staging, placed)
            raise

    def _undo(self, staging: Path, placed: list[str]) -> None:
        """Put back the previous version of each placed name (or remove it, when it is new)."""
        for name in placed:
            previous = staging / _UNDO / name
            if previous.exists():
                os.replace(previous, self.directory / name)
            else:
                (self.directory / name).unlink(missing_ok=True)
        (staging / _COMMIT_RECORD).unlink()

    def _discard(self) -> None:
        """Remove the staging folder and the folders this run created (when empty)."""
        for stream in self._streams.values():
            with contextlib.suppress(OSError):  # the content is thrown away anyway
                stream.close()
        self._streams.clear()
        self._release()
        for folder in self._created_folders:
            try:
                folder.rmdir()
            except OSError:  # something else was put there meanwhile: keep it and its parents
                break

    def _release(self) -> None:
        """Remove the staging folder and drop its lock."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _keep_undo_copy(previous: Path, undo: Path) -> None:
    """Keep the file at `previous` as `undo`: a hard link (nothing copied), else a copy."""
    if not previous.is_file() or previous.is_symlink():
        return  # nothing to keep (or a folder, which the rename will refuse)
    try:
        os.link(previous, undo)
    except OSError:  # another owner's file under protected_hardlinks, or a file system without links
        with _reported_as(previous):
            shutil.copy2(previous, undo)


def finish_killed_runs(directory: Path) -> None:
    """Finish the staging folders that killed runs left in `directory` (see the module docstring).

    A staging folder whose lock can be taken belongs to no live run. With a commit record, its
    remaining files are moved into place; then it is removed.
    """
    for staging in directory.glob(STAGING_PREFIX + "*"):
        try:
            lock = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:  # removed meanwhile by another run, or not ours to read
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live run
            os.close(lock)
            continue
        try:
            try:
                names = json.loads((staging / _COMMIT_RECORD).read_text(encoding="utf-8"))
            except (OSError, ValueError):  # killed before its commit: the previous outputs stand
                names = []
            for name in names:
                if (staging / _FILES / name).exists():
                    os.replace(staging / _FILES / name, directory / name)
            shutil.rmtree(staging, ignore_errors=True)
        finally:
            os.close(lock)


@contextlib.contextmanager
def _reported_as(destination: Path) -> Iterator[None]:
    """Report an OSError about a staged file as one about its destination, the name a user gave."""
    try:
        yield
    except OSError as error:
        if error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(destination)) from error


def write_files_atomically(
    directory: str | os.PathLike[str], contents: Mapping[str, bytes | Iterable[bytes]]
) -> list[Path]:
    """Write every file of `contents` into `directory`, or none (see AtomicFiles).

    A file's content is bytes or an iterable of byte chunks, written as they come (a generator
    that raises half way leaves nothing behind). Returns the final paths in the order given.
    """
    with AtomicFiles(directory) as files:
        for name, data in contents.items():
            stream = files.open(name, "wb")
            for chunk in [data] if isinstance(data, bytes) else data:
                stream.write(chunk)
    return [files.directory / name for name in contents]
