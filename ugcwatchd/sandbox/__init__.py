"""Faithful local FaceDub and DubLab APIs plus an S3-like upload host.

Written from the two API documents alone; it imports nothing of the client.
"""

# Starlette and uvicorn come with the daemon (its web console); the form parser FaceDub's uploads need is
# the one package of the sandbox extra: without it, `sandbox` and `demo` name the extra to install.
import python_multipart  # noqa: F401

from .common import DOWNLOAD_MODES, SandboxConfig
from .server import SERVICES, Sandbox, run

__all__ = ["DOWNLOAD_MODES", "SERVICES", "Sandbox", "SandboxConfig", "run"]
