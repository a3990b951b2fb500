"""``python -m pegu.cli`` (how sweep workers start): the ``pegu`` command."""
import sys

from . import main

sys.exit(main())
