from valind.cli import app

app()
