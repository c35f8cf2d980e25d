import sys

from kospeech.cli import main

sys.exit(main())
