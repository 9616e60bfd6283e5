"""The core: sessions, stores' records, policy and operations. Never imports typer or rich."""
