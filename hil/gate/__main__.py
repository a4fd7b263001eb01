"""`python -m trot.hil.gate BUNDLE`: the same as `trot gate BUNDLE`."""

from trot.hil.gate.cli import main

raise SystemExit(main())
