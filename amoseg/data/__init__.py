"""Data stage: reading AMOS22 exactly, synthetic abdomens, and the prepared slice store."""
