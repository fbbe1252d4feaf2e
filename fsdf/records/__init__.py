"""Run records, statistics, the registry of queues and consumers, and pause/resume (issue 15).

Write side: :mod:`fsdf.records.middleware` (per consumer) and :mod:`fsdf.records.writer` (one
buffer and thread per process). Read side: :mod:`fsdf.records.queries`, the functions the
``fsdf`` command and the dashboard call. Storage: :mod:`fsdf.records.store` and its SQLite and
MongoDB backends. Nothing here is imported by a consumer whose records and statistics are off.
"""
from __future__ import annotations

from fsdf.options import FunctionResultStatusPersistanceConfig

RunRecordsConfig = FunctionResultStatusPersistanceConfig
"""The modern name of the seed's ``FunctionResultStatusPersistanceConfig``."""

__all__ = ['RunRecordsConfig']
