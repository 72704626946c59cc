import sys

from hicom.cli import main

sys.exit(main())
