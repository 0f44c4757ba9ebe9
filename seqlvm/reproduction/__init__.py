"""`seqlvm reproduce`: the papers' tables, ours beside theirs. Each table is a module of `tables/` (its rows for a
budget, one row's runner, the paper's trends); `reproduce` runs their rows as one Ray Tune run and writes the tables
(`report`). Imported only by the command line."""
from seqlvm.reproduction.report import TableResult
from seqlvm.reproduction.reproduce import reproduce
from seqlvm.reproduction.request import ReproduceRequest
from seqlvm.reproduction.tables import TABLES

__all__ = ["ReproduceRequest", "TABLES", "TableResult", "reproduce"]
