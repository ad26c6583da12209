"""A training process asked to give its job back (its worker is stopping: SIGUSR1) saves where it is and
exits, so that the next worker resumes the job there instead of starting it over. Torch-free: the
signal handler is installed before the training stack is imported."""

from __future__ import annotations

import sys
import threading
from types import FrameType

# the training process's exit code when it handed its job back
HANDED_BACK = 75
requested = threading.Event()
# set while the training loop runs: it then saves a checkpoint at its next step before exiting
fitting = threading.Event()
# set once training is done: the job is seconds from its end (validation, the package), so it finishes
finishing = threading.Event()


def on_signal(signum: int, frame: FrameType | None) -> None:
    requested.set()
    if not fitting.is_set() and not finishing.is_set():
        sys.exit(HANDED_BACK)  # before training there is nothing to save
