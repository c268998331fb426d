"""Files written atomically and readable by others: the one helper every writer of outputs uses.

`write_atomic(path, data)` writes bytes (or text) through a uniquely named temporary file in the target's
folder (mkstemp: two writers never share a temporary, a killed writer leaves only a `.tmp` behind), fsyncs
it, gives it mode 0666 less the umask (mkstemp's own 0600 would make manifests and reports unreadable by
the other users of a shared data or results folder) and renames it into place.
`readable(path_or_fd)` applies that mode to a file made some other way (e.g. by tempfile.mkstemp).
"""
import os
import tempfile


def shared_mode():
    """0666 less this process's umask: the mode open() would give a new file."""
    umask = os.umask(0)   # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def readable(path_or_fd):
    if isinstance(path_or_fd, int):
        os.fchmod(path_or_fd, shared_mode())
    else:
        os.chmod(path_or_fd, shared_mode())


def temporary_beside(path, prefix=None):
    """(fd, name) of a new unique temporary file in path's folder, named `<name>.<random>.tmp`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    return tempfile.mkstemp(dir=folder, prefix=prefix or os.path.basename(path) + ".", suffix=".tmp")


def write_atomic(path, data, prefix=None):
    """Write `data` (bytes or str, UTF-8) to `path` atomically, mode 0666 less the umask."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = temporary_beside(path, prefix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            readable(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
