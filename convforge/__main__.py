import sys

from convforge.sw.cli import main

sys.exit(main())
