"""Write files and folders so that their path always holds a complete old or new version.

* :func:`atomic_path` yields a temporary path beside a file's target and, once the block succeeded,
  fsyncs it and renames it over the target; :func:`write_atomic` writes bytes or text through it.
* :func:`replace_folder` fills a hidden ``.NAME.partial-*`` sibling, fsyncs every file and folder
  in it, then swaps it with the existing folder in one step (Linux ``renameat2`` with
  ``RENAME_EXCHANGE``), so there is no moment without a folder at the path. Where the system
  cannot swap, the old folder is renamed to ``.NAME.old-*`` first and the new one takes its
  place; a crash between the two renames leaves both complete siblings, and
  :func:`recover_folder` (called by every reader and writer of such folders) puts the newest
  complete one back.
* Stale siblings are removed only when they are provably ours: a partial folder still holding the
  marker file, a folder the caller's ``complete`` test recognises, or an empty folder.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "note.txt"
    >>> write_atomic(target, "hello")
    >>> target.read_text()
    'hello'
    >>> folder = target.parent / "out"
    >>> with replace_folder(folder) as staging:
    ...     _ = (staging / "a.txt").write_text("new")
    >>> sorted(p.name for p in target.parent.iterdir())
    ['note.txt', 'out']
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

#: Written first into every staging folder and removed once it is complete: proves the folder is ours.
PARTIAL_MARKER = ".neuroprune-partial"
_PARTIAL, _OLD = "partial", "old"


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to a temporary file beside ``path``, then rename it over ``path``.

    The file and its folder are fsynced (:func:`atomic_path` does the renaming). If anything fails,
    the temporary file is removed and ``path`` is left as it was; the folder must exist.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, parents=False) as temporary, open(temporary, "xb") as handle:
        handle.write(payload)


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Make a folder's entries (renames, new files) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _siblings(path: Path, kind: str) -> list[Path]:
    prefix = f".{path.name}.{kind}-"
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    found = [p for p in entries if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)  # newest first


def _is_empty(folder: Path) -> bool:
    return not any(folder.iterdir())


def _ours(folder: Path, complete: Callable[[Path], bool]) -> bool:
    try:
        return (folder / PARTIAL_MARKER).is_file() or _is_empty(folder) or complete(folder)
    except OSError:
        return False


def recover_folder(path: str | os.PathLike[str], complete: Callable[[Path], bool] = lambda _: False) -> bool:
    """Put the newest complete leftover back at ``path`` if a crash left nothing there.

    A crash between the two renames of the fallback swap leaves a complete ``.NAME.partial-*``
    (the new version) and ``.NAME.old-*`` (the previous one) and nothing at ``path``. The
    newest complete partial folder wins, else the newest complete old one. Returns whether a
    folder was put back.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        return False
    for kind in (_PARTIAL, _OLD):
        for candidate in _siblings(path, kind):
            if not (candidate / PARTIAL_MARKER).exists() and complete(candidate):
                os.replace(candidate, path)
                fsync_folder(path.parent)
                return True
    return False


def clean_stale(path: str | os.PathLike[str], complete: Callable[[Path], bool] = lambda _: False) -> list[Path]:
    """Remove ``.NAME.partial-*`` / ``.NAME.old-*`` siblings of ``path`` that are ours; returns them.

    Nothing is removed while ``path`` itself is missing (the leftovers may be all there is), and a
    sibling that is not provably ours (marker, ``complete``, or empty) is left alone.
    """
    path = Path(path)
    if not path.exists():
        return []
    removed = []
    for kind in (_PARTIAL, _OLD):
        for sibling in _siblings(path, kind):
            if _ours(sibling, complete):
                shutil.rmtree(sibling, ignore_errors=True)
                removed.append(sibling)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if function(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # the filesystem cannot swap
        return False
    raise OSError(code, os.strerror(code), str(b))


def _sync_tree(folder: Path, mode: int) -> None:
    for root, dirs, files in os.walk(folder):
        for name in files:
            file = Path(root) / name
            os.chmod(file, mode)  # one mode for every file (safetensors writes 0600)
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        for name in dirs:
            fsync_folder(Path(root) / name)
    fsync_folder(folder)


def _swap_into_place(staging: Path, path: Path) -> None:
    if not path.exists():
        os.replace(staging, path)
        return
    if _exchange(staging, path):
        shutil.rmtree(staging, ignore_errors=True)  # staging now holds the old folder
        return
    old = path.parent / f".{path.name}.{_OLD}-{uuid.uuid4().hex[:8]}"
    os.replace(path, old)
    try:
        os.replace(staging, path)  # killed before this: recover_folder puts the new one back
    except BaseException:
        os.replace(old, path)  # an error (not a kill): the old folder goes back, the new is dropped
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def replace_folder(path: str | os.PathLike[str], complete: Callable[[Path], bool] = lambda _: False) -> Iterator[Path]:
    """Yield an empty staging folder; when the block succeeds it becomes ``path``, replacing any folder there.

    Overwrite decisions are the caller's: an existing folder at ``path`` is replaced. If the block
    fails, the staging folder is removed and ``path`` is left as it was. ``complete`` recognises a
    finished folder of the caller's kind, so that leftovers of a crash can be recovered or cleaned.
    """
    path = Path(path)
    recover_folder(path, complete)
    clean_stale(path, complete)
    staging = path.parent / f".{path.name}.{_PARTIAL}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        marker = staging / PARTIAL_MARKER
        with open(marker, "x") as handle:
            handle.write("neuroprune is writing this folder; it is removed when the folder is complete\n")
        mode = marker.stat().st_mode & 0o777  # what a plainly created file gets under the umask
        yield staging
        marker.unlink()
        _sync_tree(staging, mode)
        _swap_into_place(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_folder(path.parent)


@contextlib.contextmanager
def output_folder(path: str | os.PathLike[str], complete: Callable[[Path], bool], *,
                  overwrite: bool) -> Iterator[Path]:
    """:func:`replace_folder` for a result folder, after the checks every one needs: a file at the
    path is refused (:class:`OutputPathError`), an existing folder too unless ``overwrite``
    (:class:`OutputExistsError`); a swap an earlier run left half done is finished first.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out"
        >>> with output_folder(target, lambda folder: True, overwrite=False) as staging:
        ...     _ = (staging / "model.bin").write_bytes(b"weights")
        >>> sorted(p.name for p in target.iterdir())
        ['model.bin']
    """
    from neuroprune.core.errors import OutputExistsError, OutputPathError

    folder = Path(path)
    recover_folder(folder, complete)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"output folder {str(folder)!r} is a file; a folder is wanted there")
    if folder.exists() and not overwrite:
        raise OutputExistsError(f"output folder {str(folder)!r} already exists; choose another or pass overwrite")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with replace_folder(folder, complete) as staging:
        yield staging


def write_files(folder: Path, files: Mapping[str, object]) -> None:
    """Write ``files`` (relative name -> content) into ``folder``, typically a staging folder of
    :func:`replace_folder`: bytes and text as they are, anything else as indented JSON.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_files(folder, {"a.txt": "hi", "sub/b.json": {"x": 1}})
        >>> json.loads((folder / "sub" / "b.json").read_text()), (folder / "a.txt").read_text()
        ({'x': 1}, 'hi')
    """
    for name, content in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        elif isinstance(content, str):
            target.write_text(content)
        else:
            target.write_text(json.dumps(content, indent=2, default=str))


def remove_folder(path: str | os.PathLike[str]) -> None:
    """Delete a folder of ours: renamed to a hidden ``.NAME.old-*`` sibling first, so that a crash
    midway leaves no half-deleted folder at the path (:func:`clean_stale` removes the rest later)."""
    path = Path(path)
    if not path.is_dir():
        return
    old = path.parent / f".{path.name}.{_OLD}-{uuid.uuid4().hex[:8]}"
    os.replace(path, old)
    fsync_folder(path.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, parents: bool = True) -> Iterator[Path]:
    """A temporary path next to ``path``; renamed onto it if the block succeeds, removed otherwise.

    The one writer of single files: :func:`write_atomic` writes bytes through it, and writers that
    want a path (the exporters) use it directly, so that a check can run on the very file that
    then takes the final name. The file is fsynced before the rename and the folder after it.
    With ``parents`` missing parent folders are created.
    """
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}{path.suffix}"
    try:
        yield temporary
        with open(temporary, "rb+") as handle:  # on disk before it takes the final name
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        fsync_folder(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
