"""``python -m tapetum`` runs the command line."""

from tapetum.cli.app import main

main()
