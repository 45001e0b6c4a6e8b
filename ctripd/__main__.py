import sys

from ctripd.cli.main import main

sys.exit(main())
