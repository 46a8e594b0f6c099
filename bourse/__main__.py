import sys

from bourse.cli import main

sys.exit(main())
