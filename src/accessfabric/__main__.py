import sys

from accessfabric.cli import main

sys.exit(main())
