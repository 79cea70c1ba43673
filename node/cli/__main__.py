"""`python -m node.cli`: the `blacktail` command line, without the installed script."""

from node.cli import main

main()
