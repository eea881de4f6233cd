"""Third-party chatter off, at its source, for every `mlora` command and the Ray processes of a
sweep: no progress bars, no INFO lines; what is left on the terminal is ours (and Ray's trial table).

Each library's own switch, set before it is imported (most read it once, at import) and applied
again to the ones already loaded (`mlora_core` imports transformers before the CLI parses its
arguments). A user's own setting of any of these variables wins; set e.g. MLFLOW_LOGGING_LEVEL=INFO
or HF_HUB_DISABLE_PROGRESS_BARS=0 to see a library's lines again (MLORA_RAY_LOGS=1: Ray's).
"""
from __future__ import annotations

import logging
import os
import sys

# what each silences (checked on transformers 5.25, huggingface_hub, datasets, MLflow 3.18):
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",           # the hub's bars and, read at transformers' import,
                                                   # its "Loading weights" bar (utils/logging._tqdm_active)
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",      # datasets' file-read bars
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",   # MLflow's artifact upload/download bars
    "MLFLOW_LOGGING_LEVEL": "WARNING",             # MLflow's INFO lines ("Creating initial MLflow database
                                                   # tables...", "Running the predict function ...")
}
# Not reached by any switch: mlflow.register_model's two print()s to stderr ("Successfully registered
# model ...", "Created version ..."), which only MlflowClient's own calls avoid (registry.py).


# Ray 2.60 turns token auth on by default for a local cluster it starts and says so in a WARNING
# at every start ("Token authentication is enabled ... Set RAY_AUTH_MODE=disabled to opt out").
# Set explicitly, as Ray's token-auth guide says (RAY_AUTH_MODE=token before the cluster starts;
# ray.init generates ~/.ray/auth_token when missing), it is the same auth and Ray stays silent.
# It must be in the environment before `import ray`: Ray reads its config once, at import; set
# after, the driver stays 'disabled' while the GCS it starts wants a token (checked: init fails).
# A cluster we join (RAY_ADDRESS, `ray job submit`) keeps its own mode: not set there.
LOCAL_RAY_AUTH = {"RAY_AUTH_MODE": "token"}


def quiet_env() -> dict[str, str]:
    """Put QUIET_ENV into this process's environment (a user's value wins) and return it: a local
    Ray's processes inherit it, a cluster's get it in the job's runtime env (ray_cluster.py)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        for key, value in LOCAL_RAY_AUTH.items():
            os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in QUIET_ENV}


def quiet_loaded() -> None:
    """The same switches for the libraries this process has already imported (their import-time
    reads of the environment came too early), through each library's own API."""
    env = quiet_env()
    if env["HF_HUB_DISABLE_PROGRESS_BARS"].lower() in ("1", "true", "yes", "on"):
        if "huggingface_hub" in sys.modules:
            from huggingface_hub.utils import disable_progress_bars
            disable_progress_bars()
        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()
    if env["HF_DATASETS_DISABLE_PROGRESS_BARS"].lower() in ("1", "true", "yes", "on") and "datasets" in sys.modules:
        from datasets.utils import disable_progress_bars as datasets_bars_off
        datasets_bars_off()
    if "mlflow" in sys.modules:  # it configured its logger at import, at the level the env then said
        logging.getLogger("mlflow").setLevel(env["MLFLOW_LOGGING_LEVEL"].upper())


def quiet() -> dict[str, str]:
    """Both: the environment for what is imported later, the APIs for what is loaded now."""
    quiet_loaded()
    return quiet_env()
