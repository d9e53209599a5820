"""Merge a file's rows into profiles, one batch of rows at a time, over whole columns (polars).

Per batch: key every row (its first identifier value and occurrence number) and hash its
content, and drop rows applied before in this exact form (`memory`); find each row's
profile and read the mapped properties of those profiles (`plan.read_batch`); apply the
rules in one pass, all the rows of a profile together as applying them one after the other
would (`apply`), and work out every write (`plan.plan_batch`); then write new profiles,
patches of changed ones, the identity index and the row records (`write`). The `Pipeline`
runs the three on three threads, each on a different batch. Nothing here commits: the goal
runs every batch of a file in the file's one transaction.

The modules, in the order a batch meets them (each imports only those before it):
`context` (mappings and the file's state), `memory` (exactly-once), `apply` (the rules
over frames), `plan`, `write`, `pipeline` (start, the threads, finish).
"""

from sftp_connector.merge.context import (
    ColumnRule,
    Counts,
    FileMerge,
    Settings,
    context,
    field_col,
    mappings,
    prop_col,
)
from sftp_connector.merge.pipeline import Pipeline, finish, start

__all__ = [
    "ColumnRule",
    "Counts",
    "FileMerge",
    "Pipeline",
    "Settings",
    "context",
    "field_col",
    "finish",
    "mappings",
    "prop_col",
    "start",
]
