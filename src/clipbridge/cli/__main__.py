"""`python -m clipbridge.cli` runs the command line."""
import sys

from clipbridge.cli.main import main

sys.exit(main())
