"""`python -m samstudy` = the `samstudy` command."""

import sys

from samstudy.cli import main

sys.exit(main())
