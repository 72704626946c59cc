import sys

from standin.cli import main

sys.exit(main())
