"""Output files that appear all together or not at all.

Each file is written to a temporary name inside its destination folder (so the final rename
stays on one file system) and moved over its final name with os.replace only when every file
was written. On an error the temporary files are removed, the previous outputs stay as they
were, and the folders the run created are removed again.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

#: Mode of the written files: readable by everyone, like a file `open()` makes under the usual
#: umask (mkstemp's 0600 would hide a shared dataset or report from other users).
FILE_MODE = 0o644


class AtomicFiles:
    """A context manager whose opened files replace `directory/name` only on a clean exit.

    with AtomicFiles(outdir) as files:
        files.open("report.json").write(text)          # text: UTF-8, no newline translation
        files.open("mask.png", "wb").write(png_bytes)  # bytes

    Entering creates the directory and missing parents. A clean exit closes every stream and
    renames each file into place; an exception (in the block, or while closing or renaming)
    deletes the temporary files not yet renamed, removes the folders this run created when they
    are empty, and propagates.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).absolute()
        self._files: dict[str, tuple[Path, IO[Any]]] = {}
        self._created_folders: list[Path] = []

    def __enter__(self) -> AtomicFiles:
        # Deepest first, the order they are removed in.
        self._created_folders = [folder for folder in (self.directory, *self.directory.parents) if not folder.exists()]
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as error:  # a file where a folder must be
            blocking = next(folder for folder in (self.directory, *self.directory.parents) if os.path.lexists(folder))
            where = "it" if blocking == self.directory else str(blocking)
            raise NotADirectoryError(f"cannot write into {self.directory}: {where} is not a directory") from error
        return self

    def open(self, name: str, mode: Literal["w", "wb"] = "w") -> IO[Any]:
        """A new stream that will become `directory/name`: text (UTF-8, newline="") for "w", bytes for "wb"."""
        if name in self._files:
            raise ValueError(f"{name} is already open in {self.directory}")
        with _reported_as(self.directory / name):
            descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.directory)
        try:
            os.fchmod(descriptor, FILE_MODE)
            stream = open(descriptor, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {}))
        except BaseException:
            os.close(descriptor)
            os.unlink(temporary)
            raise
        self._files[name] = (Path(temporary), stream)
        return stream

    def __exit__(
        self, error_type: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if error_type is not None:
            self._discard()
            return
        try:
            for name, (_, stream) in self._files.items():
                with _reported_as(self.directory / name):
                    stream.close()  # a full disk may only show here, when the buffer is flushed
            for name in list(self._files):
                with _reported_as(self.directory / name):
                    os.replace(self._files[name][0], self.directory / name)
                del self._files[name]
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        """Delete the temporary files not renamed yet and the folders this run created (when empty)."""
        for temporary, stream in self._files.values():
            with contextlib.suppress(OSError):  # the content is thrown away anyway
                stream.close()
            temporary.unlink(missing_ok=True)
        self._files.clear()
        for folder in self._created_folders:
            try:
                folder.rmdir()
            except OSError:  # something else was put there meanwhile: keep it and its parents
                break


@contextlib.contextmanager
def _reported_as(destination: Path) -> Iterator[None]:
    """Report an OSError about a temporary file as one about its destination, the name a user gave."""
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
