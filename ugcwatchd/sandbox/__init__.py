"""Faithful local FaceDub and DubLab APIs plus an S3-like upload host.

Written from the two API documents alone; it imports nothing of the client.
"""

from .common import DOWNLOAD_MODES, SandboxConfig
from .server import SERVICES, Sandbox, run

__all__ = ["DOWNLOAD_MODES", "SERVICES", "Sandbox", "SandboxConfig", "run"]
