"""``python tests/parallel_run.py fit ...`` runs ``lit-vdit fit ...`` in a fresh process for the tests.

Lightning's launcher starts the extra processes of a multi-process run by re-executing ``sys.argv``,
so the arguments are handed to the CLI while ``sys.argv`` stays as given.
"""

import sys

import lightning as L

from lit_vdit.build import VDiTCLI
from lit_vdit.data import VideoDataModule

if __name__ == "__main__":
    VDiTCLI(
        L.LightningModule,
        VideoDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=sys.argv[1:],
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf"},
    )
