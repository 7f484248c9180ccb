import sys

from orchestrator.commands.cli import main

sys.exit(main())
