"""``python -m worker --queues erase,generate``."""

import sys

from worker.main import main

sys.exit(main())
