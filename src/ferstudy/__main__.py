import sys

from ferstudy.cli import main

sys.exit(main())
