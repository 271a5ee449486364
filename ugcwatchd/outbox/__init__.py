"""The outbox: atomic files, the sidecar documents, and the delivery stage that writes them."""

from .files import delete_input, free_name, iso, move_input, remove, write_atomic, write_json
from .sidecars import SIDECAR_VERSION, sidecar_path

__all__ = [
    "SIDECAR_VERSION",
    "delete_input",
    "free_name",
    "iso",
    "move_input",
    "remove",
    "sidecar_path",
    "write_atomic",
    "write_json",
]
