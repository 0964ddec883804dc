"""Files: writing outputs safely (atomic files, output folders checked before long work) and
hashing them.

Nothing here knows about the model; every command that writes goes through these helpers.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import UserError


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``, so readers never see a partial file.

    The file gets the permissions any new file would (``0666`` less the umask), not the ``0600``
    of the temporary file. An operating-system error (a full disk, a folder without write
    permission) becomes a one-line [`UserError`][dfpir.errors.UserError] naming ``path``, not the temporary file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_folder(folder: Path) -> None:
    """Make sure files can be written in ``folder`` (created if missing), else a one-line [`UserError`][dfpir.errors.UserError].

    Commands call it before long work, so that a bad output path fails in a second, not after.
    The folders it had to create for the test are removed again (the writers create them), so a
    run that fails later leaves no empty folder behind.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write to output folder {folder}: it is a file")
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to output folder {folder}: {exc.strerror or exc}") from None
    finally:
        for p in created:
            try:
                p.rmdir()
            except OSError:  # not empty, or never made: it and its parents stay
                break


def check_new_weights(output: Path, source: Path, overwrite: bool) -> None:
    """Refuse, in one line, an output weights file that is the ``source`` file, a folder, or an
    existing file without ``overwrite``; then check that its folder can be written. For the commands
    that write a changed copy of a weights file."""
    if output.resolve() == source.resolve():
        raise UserError(f"-o {output} is the input weights file; write the new weights to a new file")
    if output.is_dir():
        raise UserError(f"-o {output} is a folder; give a file name, e.g. -o {output / 'new.safetensors'}")
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it")
    check_output_folder(output.parent)


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()
