"""Snakemake executor plugin for CANFAR: each job runs as a Skaha headless session.

Snakemake discovers the plugin by this module's name and reads `Executor`,
`ExecutorSettings` and `common_settings` from it.
"""

from snakemake_executor_plugin_canfar.executor import Executor
from snakemake_executor_plugin_canfar.settings import ExecutorSettings, common_settings

__all__ = ["Executor", "ExecutorSettings", "common_settings"]
