"""Shared test set-up: tests talk only to fake servers on 127.0.0.1."""

import importlib.util
import os

os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"
for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(var, None)

# Fixtures of the fake servers, registered when the module exists.
pytest_plugins = [
    name
    for name in ("tests.fakes.baidu", "tests.fakes.telegram", "tests.fakes.webank")
    if importlib.util.find_spec(name) is not None
]
