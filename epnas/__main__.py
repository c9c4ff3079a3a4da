import sys

from epnas.cli import main

sys.exit(main())
