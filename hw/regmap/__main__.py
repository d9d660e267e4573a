import sys

from convforge.hw.regmap import main

sys.exit(main())
