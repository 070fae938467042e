"""`python -m wanstudio` runs the `wan` command line."""

from wanstudio.cli import main

main()
