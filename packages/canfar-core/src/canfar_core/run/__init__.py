"""`canfar-run`: one command, or N replicas, run in CANFAR headless sessions and waited
for like Slurm's `srun` / `sbatch --wait`.

    canfar-run --image images.canfar.net/myproject/pipeline:1.4 -- python reduce.py night1
    canfar-run --replicas 20 --max-running 5 --retries 1 -- ./process-chunk.sh

Modules, one purpose each: `options` (the command line, checked), `plan` (the checks
that need the server, and the spec), `runner` (create, watch, retry, delete on
interrupt), `stream` (output while it runs), `progress` (what is said while sessions
queue), `report` (verdicts, the table, the JSON, the exit code), `cli` (entry point).
"""

from canfar_core.run.cli import main

__all__ = ["main"]
