"""sessionctl: one command to look after application session stores."""

__version__ = "0.1.0"
