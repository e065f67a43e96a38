import sys

from rlguard.orchestrator.cli import main

sys.exit(main())
