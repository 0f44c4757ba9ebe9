import sys

from seqlvm.cli import main

sys.exit(main())
