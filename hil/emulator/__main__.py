"""`python -m trot.hil.emulator ...`: the same as `trot emulate ...`."""

import sys

from trot.hil.emulator.cli import main

sys.exit(main())
