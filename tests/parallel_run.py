"""``python tests/parallel_run.py fit ...`` runs ``lit-vdit fit ...`` in a fresh process for the tests.

Lightning's launcher starts the extra processes of a multi-process run by re-executing ``sys.argv``,
so the arguments are handed to the CLI while ``sys.argv`` stays as given.
"""

import sys

from lit_vdit.build import lightning_cli

if __name__ == "__main__":
    lightning_cli(sys.argv[1:])
