"""The session domain: model, time, mapping, policy, redaction, archive format. Pure: no I/O."""
