"""The command line: thin Typer commands over `sessionctl.app`."""
