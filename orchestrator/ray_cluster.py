"""Ray for a sweep: join the cluster it runs on (RAY_ADDRESS, `ray job submit`) or start a local
one on 127.0.0.1, with the environment every trial process needs. The one module that starts Ray."""
from __future__ import annotations

import json
import os
import sys

from .quiet import QUIET_ENV

LOCAL_RAY_STARTS = 3   # tries to start a local Ray (see init_ray)
# the driver's settings every trial process needs too, when set (a local Ray inherits them anyway;
# on a cluster they travel in the job's runtime env): caches, offline mode, tracking's patience,
# the libraries' quiet switches (quiet.py)
FORWARDED_ENV = ("MLORA_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME",
                 "MLORA_TRACKING_PATIENCE_S", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                 "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", *QUIET_ENV)


# Environment for every Ray process of a sweep. Train v2 polls its workers every 2 s by
# default and a worker's result queue holds one report, so a report made before the last one
# was polled blocks training. Reports come every ~2% of a trial (worker_loop), so a 1 s poll
# never blocks, while 0.25 s polling cost ~5% of a core per trial on a 2-core machine.
# Tune (driver): a trial that checkpoints num_to_keep times forces an experiment-state snapshot,
# which keeps a restore consistent with the checkpoints Tune deleted; that is intended here, so
# not the warning that short trials checkpointing often print about it.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1.0", "RAY_AIR_NEW_OUTPUT": "0", "RAY_CHDIR_TO_TRIAL_DIR": "0",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
           "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
# Only on a local Ray that this command starts itself: no spot preemption to watch for (one
# actor less per trial) and no Prometheus/dashboard to feed Train metrics to (dashboard off).
# On a cluster (RAY_ADDRESS, `ray job submit`) Ray's defaults stay.
LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "0"}


def init_ray(num_cpus_hint: int) -> None:
    import ray
    if ray.is_initialized():
        return
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    env = {k: os.environ[k] for k in RAY_ENV}
    for k in FORWARDED_ENV:
        if k in os.environ:
            env[k] = os.environ[k]
    verbose = bool(os.environ.get("MLORA_RAY_LOGS"))
    if os.environ.get("RAY_ADDRESS"):  # an existing cluster, or inside `ray job submit`
        # Ray refuses a variable set both by the job's runtime env and here: the job's wins
        job_env = job_config().get("runtime_env", {}).get("env_vars", {}) or {}
        env = {k: v for k, v in env.items() if k not in job_env}
        ray.init(runtime_env={"env_vars": env}, log_to_driver=verbose, logging_level="WARNING")
    else:  # a local one, no dashboard. Note: Ray maps a loopback node IP to the host's address
        # and its gRPC services listen on all interfaces; Ray's token auth guards them (on by
        # default; the CLI sets RAY_AUTH_MODE=token before Ray's import, quiet.py, so Ray does not warn).
        # Its processes inherit this process's environment, so no runtime_env: with one, Ray did
        # not hand the workers it prestarts at init to the first trials (it started new ones,
        # +3.5 s before the first two trials could begin, measured on 2 busy cores).
        for k, v in LOCAL_RAY_ENV.items():
            os.environ.setdefault(k, v)  # a user's setting wins
        # Ray gives its raylet a fixed 30 s to register (ray/_private/node.py); on a machine busy
        # with other jobs (measured at load > ~8 on 2 cores) it can miss that: start it again
        for attempt in range(1, LOCAL_RAY_STARTS + 1):
            try:
                ray.init(num_cpus=max(num_cpus_hint, os.cpu_count() or 1), include_dashboard=False,
                         log_to_driver=verbose, logging_level="WARNING", _node_ip_address="127.0.0.1")
                return
            except Exception as e:  # noqa: BLE001  Ray raises a bare Exception for this
                if "timed out during startup" not in str(e) or attempt == LOCAL_RAY_STARTS:
                    raise
                print(f"local Ray did not start in time (a busy machine?); starting it again "
                      f"({attempt}/{LOCAL_RAY_STARTS - 1})", file=sys.stderr, flush=True)
                ray.shutdown()


def job_config() -> dict:
    """The `ray job submit` job's config (runtime env, metadata) when running as one, else {}."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def submission_id() -> str:
    """The id `ray job logs/stop` take (not Ray's internal job id), or ''."""
    return os.environ.get("RAY_JOB_SUBMISSION_ID") or job_config().get("metadata", {}).get("job_submission_id", "")


