"""``python -m jmapws_sync``: the same as the ``jmapws-sync`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
