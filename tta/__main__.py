"""``python -m tta`` runs the ``tta`` command line."""
from tta.cli.main import cli

cli(prog_name="tta")
