"""File stores: one folder store (folder.py) that takes a file-name pattern and a codec (JSON
files, PHP session files); adding a file format means writing a codec."""
