"""`python -m megapodd.ctl` runs megapodctl (the package build uses it)."""

import sys

from megapodd.ctl.main import main

sys.exit(main())
