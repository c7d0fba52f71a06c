"""Canonical JSON: identical data gives identical bytes, and so identical digests."""
import hashlib
import json


def dumps(obj):
    """Stable JSON: sorted keys, no spaces that vary."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def digest_of(text):
    return hashlib.sha256(text.encode()).hexdigest()


def load(path):
    with open(path) as fh:
        return json.load(fh)
