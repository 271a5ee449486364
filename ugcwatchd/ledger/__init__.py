"""The ledger: the single source of truth, in SQLite, committed before every side effect."""

from ..errors import LedgerError, StaleTransition
from .records import Earlier, Failure, InputFile, Item, ItemSettings, Job, JobDetail, PlannedJob, new_token
from .schema import FILE_NAME, ITEM_MOVES, ITEM_STATES, JOB_MOVES, JOB_STATES, SCHEMA_VERSION
from .store import Ledger

__all__ = [
    "FILE_NAME",
    "ITEM_MOVES",
    "ITEM_STATES",
    "JOB_MOVES",
    "JOB_STATES",
    "SCHEMA_VERSION",
    "Earlier",
    "Failure",
    "InputFile",
    "Item",
    "ItemSettings",
    "Job",
    "JobDetail",
    "Ledger",
    "LedgerError",
    "PlannedJob",
    "StaleTransition",
    "new_token",
]
