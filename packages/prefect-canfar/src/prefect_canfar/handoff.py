"""File names of the task runner's hand-off directory (one directory per task run).

Kept apart from `remote` so that importing the package never preloads the module that
`python -m prefect_canfar.remote` runs as `__main__`.
"""

CALL_FILE = "call.pkl"
STATE_FILE = "state.pkl"
