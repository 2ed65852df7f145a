"""`python -m ufme_ray.cli` (what the tests and scripts run): the `ufme-ray` command."""

import sys

from ufme_ray.cli import main

sys.exit(main())
