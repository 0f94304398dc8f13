"""Every file archcalc writes goes through here: the path is checked before
any work starts, and the file is written atomically, so a write that fails
(a full disk, a file-size limit, an interrupt) never destroys what was there.

    check_output_path("r.html", "-o")     # exit 2 now, not after minutes of work
    write_atomic("r.html", text)          # temporary file, fsync, rename

The temporary file lives in the target's folder (a rename is atomic only
within one file system) and is removed on any failure, KeyboardInterrupt
included. A path is never opened to be checked: opening a FIFO blocks until a
reader comes, and a device (/dev/null, /dev/full) must never be replaced by a
rename, so anything but a regular file is refused.
"""
from __future__ import annotations

import os
import re
import stat

from .errors import RunError, SpecError

# .NAME.archcalc-PID.tmp: hidden, and recognisable as ours by remove_stale_temporaries
# (so is the form train wrote before this module, checkpoint.pt.tmpPID)
_TEMP_RE = re.compile(r"\.(?:.+)\.archcalc-(?P<pid>\d{1,10})(?:-\d+)?\.tmp"
                      r"|(?:checkpoint\.pt|metrics\.json|metrics\.csv)\.tmp(?P<old>\d{1,10})")
# a temporary's name must fit NAME_MAX (255 bytes) whatever the target's length
_TEMP_STEM_BYTES = 100

_KINDS = ((stat.S_ISDIR, "is a directory; give a file name"),
          (stat.S_ISFIFO, "is a FIFO (named pipe), not a regular file"),
          (stat.S_ISSOCK, "is a socket, not a regular file"),
          (stat.S_ISCHR, "is a character device, not a regular file"),
          (stat.S_ISBLK, "is a block device, not a regular file"))


def shown(path) -> str:
    """A path as one printable line (control characters shown escaped)."""
    from .render.safe import clean
    return clean(os.fsdecode(path) if isinstance(path, bytes) else str(path))


def default_output(source, suffix: str) -> str:
    """The file a command writes when -o is left out: the source's name with
    ``suffix``, in the current folder; characters a file name should not hold
    (control characters, lone surrogates) become '_'."""
    stem = os.path.splitext(os.path.basename(str(source).rstrip(os.sep)))[0] or "out"
    return re.sub("[\x00-\x1f\x7f-\x9f\ud800-\udfff]", "_", stem) + suffix


def _refuse(option: str, path, what: str) -> SpecError:
    return SpecError(f"{option} {shown(path)}: {what}")


def _kind_problem(mode: int) -> str | None:
    for test, what in _KINDS:
        if test(mode):
            return what
    return None if stat.S_ISREG(mode) else "is not a regular file"


def check_output_path(path, option: str = "-o", inputs=()) -> None:
    """Refuse, before any work, an output path that cannot be written: an
    empty name, a name with a control character (a newline in a file name
    breaks every script that lists the folder), a missing folder, a folder
    where no file can be created (read-only, /proc), an existing directory,
    FIFO, socket or device, a file without write permission, or one of the
    command's ``inputs`` (export SPEC -o SPEC would replace the spec). Raises
    SpecError (exit 2). Nothing is opened, and nothing is left behind."""
    text = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    if not text:
        raise SpecError(f"{option}: the file name is empty")
    bad = next((c for c in text if ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0), None)
    if bad is not None:
        raise _refuse(option, text, f"the name holds a control character ({bad!r}); "
                                    "give a plain file name")
    if text.endswith(os.sep) or os.path.basename(text) in (".", ".."):
        raise _refuse(option, text, "is a directory; give a file name")
    target = _resolved(text)
    parent = os.path.dirname(os.path.abspath(target))
    name_max = _name_max(parent if os.path.isdir(parent) else os.sep)
    if len(os.fsencode(os.path.basename(target))) > name_max:
        raise _refuse(option, text, f"the file name is longer than {name_max} bytes")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise _refuse(option, text, f"{shown(_first_non_folder(target))} is not a folder") \
            from None
    except OSError as e:
        raise _refuse(option, text, f"cannot be inspected ({e.strerror or e})") from None
    if st is not None:
        problem = _kind_problem(st.st_mode)
        if problem:
            raise _refuse(option, text, problem)
        if not os.access(target, os.W_OK):
            raise _refuse(option, text, "permission denied (the file is read-only)")
        for source in inputs:
            if _same_file(st, source):
                raise _refuse(option, text, f"is this command's input ({shown(source)}); "
                                            "give another file name")
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        if os.path.lexists(folder):
            raise _refuse(option, text, f"{shown(folder)} is not a folder")
        raise _refuse(option, text, f"no such folder ({shown(folder)})")
    _probe(folder, option, text)


def _same_file(st, source) -> bool:
    try:
        return os.path.samestat(st, os.stat(source))
    except (OSError, TypeError, ValueError):   # not a file (a shipped spec's name)
        return False


def _resolved(path: str) -> str:
    """The file a symlink points to (written in place of the link, which stays)."""
    return os.path.realpath(path) if os.path.islink(path) else path


def _first_non_folder(path: str) -> str:
    """The first component of ``path`` that exists and is not a directory."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        head = os.sep.join(parts[:i]) or os.sep
        if os.path.lexists(head) and not os.path.isdir(head):
            return head
    return path


def _name_max(folder: str) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _probe(folder: str, option: str, text: str) -> None:
    """Create and remove an empty temporary in the folder: the only check that
    holds for root, read-only mounts and pseudo file systems alike."""
    try:
        fd, probe = _create_temp(folder, "probe")
    except OSError as e:
        raise _refuse(option, text, f"no file can be created in {shown(folder)} "
                                    f"({e.strerror or e})") from None
    os.close(fd)
    try:
        os.remove(probe)
    except OSError:
        pass


def _create_temp(folder: str, stem: str) -> tuple[int, str]:
    """A new file of ours in ``folder`` (O_EXCL: never an existing file or a
    link planted there), mode 0666 less the umask, as open() would make it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    while len(os.fsencode(stem)) > _TEMP_STEM_BYTES:   # whole characters, never half
        stem = stem[:-1]
    base = f".{stem}.archcalc-{os.getpid()}"
    for attempt in range(100):
        name = os.path.join(folder, base + (f"-{attempt}" if attempt else "") + ".tmp")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot find a free temporary name in {folder}")


def write_atomic(path, data, by_path: bool = False) -> None:
    """Write ``data`` to ``path`` all at once or not at all. ``data``: str
    (UTF-8), bytes, or a callable that writes into the binary file object it
    gets (torch.save, savefig(fh, format=...)); with ``by_path`` the callable
    gets the temporary's path instead (for writers that only take a path,
    torch.onnx.export). An existing file keeps its
    permission bits; a symlink keeps pointing at the file it names. An OSError
    while writing is a failed run (RunError, exit 1) and the old file is intact;
    any other exception (KeyboardInterrupt too) propagates after the temporary
    is removed."""
    text = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    target = _resolved(text)
    folder = os.path.dirname(os.path.abspath(target))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = None
    tmp = None
    try:
        fd, tmp = _create_temp(folder, os.path.basename(target))
        with os.fdopen(fd, "wb") as fh:
            if by_path:
                data(tmp)
            elif callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
        _sync_file(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
        tmp = None
        _sync_folder(folder)
    except OSError as e:
        raise RunError(f"cannot write {shown(text)}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            try:
                os.remove(tmp)
            except OSError:
                pass


def _sync_file(name: str) -> None:
    """fsync by name: a by_path writer may have replaced the file we opened."""
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: str) -> None:
    """fsync the folder so the rename itself survives a power cut (best effort:
    some file systems refuse to open a directory for it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder) -> None:
    """Temporaries that a killed process left in ``folder`` (that process is gone)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = _TEMP_RE.fullmatch(name)
        if not match:
            continue
        pid = int(match.group("pid") or match.group("old"))
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue        # a live process writes it
            except ProcessLookupError:
                pass
            except (PermissionError, OverflowError, ValueError, OSError):
                continue
        try:
            os.remove(os.path.join(folder, name))
        except OSError:
            pass
