"""``python -m napari_sam.cli`` is the ``napari-sam`` command."""

import sys

from .main import main

sys.exit(main())
