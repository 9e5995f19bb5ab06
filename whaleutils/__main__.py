import sys

from whaleutils.cli import main

sys.exit(main())
