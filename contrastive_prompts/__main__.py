"""``python -m contrastive_prompts``: the command line."""

import sys

from .cli import main

sys.exit(main())
