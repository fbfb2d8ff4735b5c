"""A callback for grid tests that SIGKILLs its run's process at a step: a real kill, at a known point."""

import os
import signal
from pathlib import Path

import lightning as L


class KillAt(L.Callback):
    """Before training step ``step``, the first run to get there while ``marker`` exists removes it
    and kills its own process (so the kill happens once, whichever run of a grid arrives first)."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            try:
                self.marker.unlink()
            except FileNotFoundError:
                return
            os.kill(os.getpid(), signal.SIGKILL)
