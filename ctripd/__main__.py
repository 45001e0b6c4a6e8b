import sys

from ctripd.cli import main

sys.exit(main())
