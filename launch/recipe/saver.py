"""The recipe's checkpoint writer: the watchdog paused while it writes, a full disk named."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

from distengine.handlers import DiskSaver
from distengine.handlers.watchdog import suspended


def explain_write_error(error: BaseException, path: Path) -> BaseException:
    """``[enforce fail at inline_container.cc] unexpected pos`` -> an OSError naming ENOSPC.

    torch.save reports a failed write as a RuntimeError; the OSError behind it
    (``__context__``) has the errno. Anything else is returned as it is.
    """
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.errno is not None:
        name = errno.errorcode.get(cause.errno, "error")
        return OSError(
            cause.errno, f"[{name}] {cause.strerror} while writing the checkpoint {path}"
        )
    if "unexpected pos" in str(error):
        free = shutil.disk_usage(path.parent).free
        return OSError(
            errno.EIO,
            f"torch.save could not write the checkpoint {path} ({free} bytes free on its disk)",
        )
    return error


class RecipeSaver(DiskSaver):
    """A DiskSaver whose writes pause the hang watchdog (every rank waits for rank 0's write)."""

    def __call__(self, checkpoint: Any, filename: str, *args: Any, **kwargs: Any) -> Any:
        with suspended():
            try:
                return super().__call__(checkpoint, filename, *args, **kwargs)
            except (OSError, RuntimeError) as error:
                explained = explain_write_error(error, self.dirname / str(filename))
                if explained is error:
                    raise
                raise explained from error
