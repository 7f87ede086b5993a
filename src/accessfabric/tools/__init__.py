"""Operator and developer tools outside the core: the wire fuzzer (``fuzz``)."""
