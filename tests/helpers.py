"""Small helpers shared by the tests."""
import os


def file_contents(folder):
    """{relative path: bytes} of every file under folder: equal trees, equal dicts."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out
