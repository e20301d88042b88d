"""``python -m olsdesk``."""

import sys

from olsdesk.cli import main

sys.exit(main())
