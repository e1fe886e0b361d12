"""``python -m cli`` runs ``lq``."""

from cli.main import app

app(prog_name="lq")
