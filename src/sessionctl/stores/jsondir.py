"""A folder holding one JSON file per session (`*.json`): the one folder store of
`files/folder.py`, given the JSON codec (`files/jsoncodec.py`); what follows is what that store
does for every file format.

Symlinks are never followed or removed, only regular files directly inside the folder are
touched, a file that does not parse is an invalid session (never a crash). Removal moves a file
aside atomically, checks it is the file that was selected, then unlinks it; a file the
application rewrote meanwhile is put back.
"""

from __future__ import annotations

from pathlib import Path

from .base import Address, file_address
from .files.folder import SELECTED_CACHE, TRASH_PREFIX, FolderStore
from .files.jsoncodec import JsonCodec, decode_json

__all__ = ["SELECTED_CACHE", "SUFFIX", "TRASH_PREFIX", "JsonDirStore", "decode_json"]

SUFFIX = ".json"


class JsonDirStore(FolderStore):
    """The folder store (files/folder.py) with `*.json` names and the JSON codec."""

    kind = "jsondir"
    schemes = ("jsondir",)
    suffix = SUFFIX
    codec = JsonCodec()
    natural_batch = 1

    @classmethod
    def parse_address(cls, text: str) -> Address:
        return file_address(cls.kind, text, describe="a folder address")

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.is_dir()
