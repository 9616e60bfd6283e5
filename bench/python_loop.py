"""Baseline for folder cleanup: the loop an application writes by hand (seed 001's manager).

Reads each session file's last access and deletes the file when it is older than seven days.
No archive, no verification, no symlink care: what sessionctl is measured against.
"""

import json
import os
import sys
import time
from datetime import datetime

folder = sys.argv[1]
cutoff = time.time() - 7 * 86400
for name in os.listdir(folder):
    if not name.endswith(".json"):
        continue
    path = os.path.join(folder, name)
    with open(path) as handle:
        record = json.load(handle)
    accessed = datetime.fromisoformat(record["last_accessed"]).timestamp()
    if accessed < cutoff:
        os.remove(path)
