"""`python -m canfar_core.run`, the same as the `canfar-run` command."""

import sys

from canfar_core.run.cli import main

sys.exit(main())
