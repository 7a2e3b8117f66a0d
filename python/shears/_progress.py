"""What a long shears call shows while it works: a tqdm bar per training epoch when tqdm is
installed, ``logging`` lines otherwise. The compiled core calls a ``Display`` with
``("stage", name)`` and ``("step", (epoch, epochs, step, steps, loss))``."""

from __future__ import annotations

import logging
from typing import Any, Optional

log = logging.getLogger("shears")

try:  # tqdm is optional: ``pip install shears[progress]``.
    from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover - exercised where tqdm is absent
    _tqdm = None


class Display:
    """Shows stages and training steps; ``enabled=False`` shows nothing."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar: Optional[Any] = None
        self.epoch: Optional[int] = None
        self.last_logged = -1

    def __call__(self, event: str, payload: Any) -> None:
        if not self.enabled:
            return
        if event == "stage":
            self.close()
            log.info("%s", payload)
        elif event == "step":
            self.step(*payload)

    def step(self, epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
        if _tqdm is not None:
            if self.bar is None or self.epoch != epoch:
                self.close()
                self.bar = _tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False)
                self.epoch = epoch
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            return
        # Without tqdm: one log line per tenth of an epoch.
        tenth = (10 * step) // max(steps, 1)
        if self.epoch != epoch:
            self.epoch, self.last_logged = epoch, -1
        if tenth != self.last_logged:
            self.last_logged = tenth
            log.info("epoch %d/%d: step %d/%d, loss %.4f", epoch + 1, epochs, step, steps, loss)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def display(progress: Any) -> Any:
    """``True``/``False`` for the default display, or the caller's own callable."""
    if callable(progress):
        return progress
    return Display(bool(progress))
