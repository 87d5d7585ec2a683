"""A ``-p`` plugin for tests/test_fail_closed.py: every ``os.fsync`` takes 1.5 s longer, so that two
runs saving at once overlap inside the save."""

import os
import time

_fsync = os.fsync


def _slow_fsync(fd: int) -> None:
    time.sleep(1.5)
    _fsync(fd)


os.fsync = _slow_fsync
