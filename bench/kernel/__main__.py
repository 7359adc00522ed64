import sys

from bench.kernel.run import main

sys.exit(main())
