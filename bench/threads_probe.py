"""A Hydra callback the bench adds to its multirun: each job writes, into its own output dir, when it ran,
in which process, and how many torch threads it trained with (what vaebench.cli.threads_per_job set).

    vaebench -m ... +hydra.callbacks.threads_probe._target_=threads_probe.ThreadsProbe   (PYTHONPATH=bench)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback

PROBE_FILE = "threads_probe.json"


class ThreadsProbe(Callback):
    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        self.started = time.time()

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        import torch

        record = {"pid": os.getpid(), "start": getattr(self, "started", None), "end": time.time(),
                  "torch_threads": torch.get_num_threads(), "cores": os.cpu_count()}
        Path(HydraConfig.get().runtime.output_dir, PROBE_FILE).write_text(json.dumps(record))
