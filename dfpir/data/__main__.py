import sys

from .datasets import main

sys.exit(main())
