"""Local input files: which paths may be opened at all, and how much of one may be read.

A path can name something that is not a file. A device such as ``/dev/zero`` (or a link to it called
``photo.jpg``) never ends, so reading it whole grows memory until the machine runs out: devices are refused
from ``stat`` alone, before anything is opened. Pipes stay allowed (``ferkit analyze <(curl ...)``, a FIFO
fed by another program), and every read is bounded (:func:`read_bounded`), since neither a pipe nor a
file under ``/proc`` says its size in advance.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import BinaryIO

from ferkit.errors import InputError


def check_input_file(path: Path, error: type[InputError], what: str) -> int | None:
    """The size in bytes of ``path`` (links followed): a non-empty regular file, or None for a pipe.

    ``error`` (an :class:`~ferkit.errors.InputError` class) is raised with the reason for anything else: missing,
    a broken link, a folder, a device, a socket, an empty file. ``what`` names what was expected
    (``"an image"``, ``"a video"``) in the messages.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{path}: {'broken link' if path.is_symlink() else 'no such file'}") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a folder, not {what}")
    if stat.S_ISFIFO(st.st_mode):
        return None
    if not stat.S_ISREG(st.st_mode):
        kind = "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        raise error(f"{path}: is {kind}, not a file; give the path of {what} saved as a file"
                    + (" (a camera: ferkit camera --device N)" if what == "a video" else ""))
    if st.st_size == 0:
        raise error(f"{path}: file is empty (0 bytes)")
    return st.st_size


def read_bounded(stream: BinaryIO, limit: int, name: str, too_large: type[InputError]) -> bytes:
    """At most ``limit`` bytes of an open binary ``stream``; ``too_large`` when it holds more."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise too_large(f"{name}: more than {limit / 2**20:.0f} MiB, larger than any file ferkit accepts here")
    return bytes(data)
