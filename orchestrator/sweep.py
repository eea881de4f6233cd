"""Run a planned sweep on Ray: one Tune trial per TrialSpec.

    mlora sweep CONFIG -> Tuner(grid over TrialSpecs) -> trial_driver (a Tune function trainable)
      tune path (one worker):  worker_loop in the trial's own process, which holds its CPUs/GPUs
      train path (DDP):        TorchTrainer(worker_loop, N workers) from a trial holding ~0
    -> mlora_core.run -> final report carries result.json + adapter
    -> trial_driver logs the trial's nested MLflow run.

This module and worker.py (what trains) are the only ones that import Ray. Ray 2.60 runs
Train v2: on the train path the TorchTrainer is built inside the Tune function and forwards
rank-0 metrics with TuneReportCallback. `resources.execution` picks the path (see execution()).
Layout of an output dir: sweep.json (ids, config), experiment.yaml, mlflow.db +
mlartifacts/ (default tracking), ray/ (Tune + Train storage, checkpoints), trials/ (worker
scratch), report/.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlora_core.io import read_json, write_json
from mlora_core.models import model_provenance

from . import tracking
from .config import Experiment
from .metrics import search_score
from .plan import TrialSpec, arms_of, plan, run_config, search_groups, trial_params
from .worker import worker_loop

SWEEP_FILE = "sweep.json"
LOCAL_RAY_STARTS = 3   # tries to start a local Ray (see _init_ray)


class TrialFailed(RuntimeError):
    """A trial ended without a result (diverged, bad input, crash); its MLflow run is FAILED."""


# ---- one Tune trial ----------------------------------------------------------------------

def execution(res) -> str:
    """Where a trial trains. "tune": inside its own Tune trial process, which holds the worker's
    CPUs/GPUs (Ray places and isolates it and sets its visible GPU); a reused trial process
    starts a trial in ~1 s. "train": a TorchTrainer worker group (controller, helper actors, N
    workers: ~22 s of fresh interpreters per trial on 2 cores), needed for DDP. "auto" picks
    tune for one worker per trial. Not Ray Train v2's "local mode" (ScalingConfig(num_workers=0)):
    in Ray 2.60 its report keeps the last metrics and checkpoint in memory only
    (LocalTrainFnUtils: nothing reaches storage or Tune) and no FailureConfig applies, so a
    killed trial could neither be retried nor resume; a Tune function trial has both."""
    if res.execution == "auto":
        return "tune" if res.workers_per_trial == 1 else "train"
    return res.execution


def trial_resources(res) -> dict:
    """What the Tune trial itself requests: the worker's resources on the tune path; on the train
    path ~0 (its TorchTrainer's workers hold them; a 1-byte memory request gives a valid bundle)."""
    if execution(res) == "tune":
        return {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.gpus_per_worker else {})}
    return {"CPU": 0, "memory": 1}


def trial_driver(config: dict) -> None:
    """A Tune function trainable: open/continue the MLflow run, train (in this process or with a
    TorchTrainer), log.

    Failures (the same on both paths): one that a retry cannot fix (diverged loss, bad target
    module or data: worker_loop's {"error"} payload) marks the MLflow run FAILED once and the
    trial *ends* (its last report carries failed=1, which finish_sweep counts), so neither Tune's
    FailureConfig on the tune path nor `--resume` runs it again. Anything else raises after
    marking the run FAILED: on the tune path Tune retries it (up to resources.max_failures) from
    its last checkpoint and the retry sets the same run RUNNING again; a SIGKILLed trial process
    never gets here, Tune retries it the same way, and finish_sweep marks a run that is still
    RUNNING after the last retry FAILED. On the train path Ray Train retries the worker group
    and Tune does not retry (max_failures=0), as before."""
    from ray import tune

    spec, ctx = TrialSpec.from_dict(config["spec"]), config["ctx"]
    exp = Experiment.model_validate(ctx["experiment"])
    rc = run_config(exp, spec)
    out, uri = Path(ctx["output_dir"]), ctx["tracking_uri"]
    params = {**trial_params(exp, spec), **model_provenance(exp.model)}
    tags = {"mlora.arm": spec.arm, "ray.trial_id": tune.get_context().get_trial_id() or "",
            "ray.job_id": os.environ.get("RAY_JOB_ID", ""), "ray.submission_id": ctx.get("submission_id", "")}
    run_id = tracking.trial_run(uri, ctx["experiment_id"], ctx["parent_run_id"], spec.trial_id, params, tags)
    finished = tracking.client(uri).get_run(run_id)
    if finished.info.status == "FINISHED":  # done before an interrupted driver could record it: no re-run
        m = finished.data.metrics
        score = search_score(m, spec.method, spec.rank, exp.eval.rules[0])   # a search hears of it again
        tune.report({"final": 1, "skipped": 1, **{k: v for k, v in m.items() if k == "aurac" or k.startswith("acc_rank_")},
                     **({"search_score": score} if score is not None else {})})
        return
    cfg = {"run_config": rc.to_dict(), "trial_dir": str(out / "trials" / spec.trial_id)}
    record = functools.partial(_record_outcome, uri, run_id)
    try:
        if execution(exp.resources) == "tune":
            from .worker import TuneSession
            payload = worker_loop(cfg, TuneSession())
            record(payload, payload.get("adapter_path"))
        else:
            _train_with_torch_trainer(cfg, spec, ctx, exp.resources, record)
    except (SystemExit, KeyboardInterrupt):  # Tune stopped the trial (scheduler), or Ctrl-C: not a failure;
        # finish_sweep marks a stopped run, --resume continues an interrupted one
        raise
    except BaseException as e:  # noqa: BLE001  includes Ray's TrainingFailedError: keep the reason, mark FAILED
        reason = _first_line(e)
        tracking.fail_trial(uri, run_id, reason)
        raise TrialFailed(reason) from None


def _first_line(e: BaseException | None) -> str:
    return "" if e is None else (str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


def _record_outcome(uri: str, run_id: str, payload: dict, adapter_dir: str | None) -> None:
    """The final payload into the trial's MLflow run: FINISHED with its results, or FAILED once
    with the reason when training ended without a result that a retry could change."""
    if "error" in payload:
        tracking.fail_trial(uri, run_id, payload["error"])
    else:
        has_adapter = bool(adapter_dir) and Path(adapter_dir).is_dir()
        tracking.log_trial_result(uri, run_id, payload, adapter_dir if has_adapter else None)


def _train_with_torch_trainer(cfg: dict, spec: TrialSpec, ctx: dict, res, record) -> None:
    """The train path: a TorchTrainer of N workers (DDP) runs worker_loop; rank 0's final report
    carries the payload and the adapter as a checkpoint in the sweep's storage, which `record` logs."""
    import ray.train
    from ray.tune.integration.ray_train import TuneReportCallback

    per_worker = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.gpus_per_worker else {})}
    trainer = _trainer_class()(
        worker_loop,
        train_loop_config=cfg,
        scaling_config=ray.train.ScalingConfig(num_workers=res.workers_per_trial, use_gpu=res.gpus_per_worker > 0,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=spec.trial_id,  # deterministic: a restarted trial finds its Train run and checkpoints
            storage_path=str(Path(ctx["storage_path"]) / "train"),
            failure_config=ray.train.FailureConfig(max_failures=res.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise TrialFailed(f"trial {spec.trial_id} ended without a final report ({result.error or 'no error'})")
    with result.checkpoint.as_directory() as d:
        adapter = Path(d, "adapter")
        record(json.loads(Path(d, "final.json").read_text()), str(adapter) if adapter.is_dir() else None)


@functools.cache  # one class per process, not one per trial
def _trainer_class():
    """TorchTrainer, minus Ray Data's DatasetManager actor when no Ray Dataset is passed (ours
    never are: each worker loads and shards its data itself). Ray Train v2 starts that actor
    for every run regardless; like every Train actor it imports ray.data, pandas and pyarrow
    (~3 s CPU), which on 2 cores comes out of the trial training beside it. Uses a private
    hook of the pinned Ray (2.60); should it move, the plain TorchTrainer is used."""
    from ray.train.torch import TorchTrainer
    try:
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    except ImportError:
        return TorchTrainer
    if not hasattr(TorchTrainer, "_create_default_callbacks"):
        return TorchTrainer

    class LeanTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            if self.datasets:
                return callbacks
            return [cb for cb in callbacks if not isinstance(cb, DatasetsCallback)]

    return LeanTorchTrainer


# ---- the sweep ------------------------------------------------------------------------------

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


def _init_ray(num_cpus_hint: int) -> None:
    import ray
    if ray.is_initialized():
        return
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    env = {k: os.environ[k] for k in RAY_ENV}
    for k in ("MLORA_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME"):
        if k in os.environ:
            env[k] = os.environ[k]
    verbose = bool(os.environ.get("MLORA_RAY_LOGS"))
    if os.environ.get("RAY_ADDRESS"):  # an existing cluster, or inside `ray job submit`
        # Ray refuses a variable set both by the job's runtime env and here: the job's wins
        job_env = _job_config().get("runtime_env", {}).get("env_vars", {}) or {}
        env = {k: v for k, v in env.items() if k not in job_env}
        ray.init(runtime_env={"env_vars": env}, log_to_driver=verbose, logging_level="WARNING")
    else:  # a local one, no dashboard. Note: Ray maps a loopback node IP to the host's address
        # and its gRPC services listen on all interfaces; Ray's token auth (default) guards them.
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


def _job_config() -> dict:
    """The `ray job submit` job's config (runtime env, metadata) when running as one, else {}."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def submission_id() -> str:
    """The id `ray job logs/stop` take (not Ray's internal job id), or ''."""
    return os.environ.get("RAY_JOB_SUBMISSION_ID") or _job_config().get("metadata", {}).get("job_submission_id", "")


def prepare_output_dir(out: Path, resume: bool, overwrite: bool) -> dict | None:
    """The existing sweep.json when resuming; refuses to clobber a sweep by accident (ray#35812)."""
    existing = (out / SWEEP_FILE).is_file()
    if resume:
        if not existing:
            raise ValueError(f"--resume: {out} holds no sweep to resume (no {SWEEP_FILE})")
        return read_json(out / SWEEP_FILE)
    if existing and not overwrite:
        raise ValueError(f"{out} already holds a sweep; pass --resume to continue it or --overwrite to replace it")
    if existing and overwrite:
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"\0" * 1024 * 1024)  # 1 MiB: catches read-only and full disks before training
        probe.unlink()
    except OSError as e:
        raise ValueError(f"output dir {out} is not writable: {e.strerror or e}") from None
    return None


def _reporter(n_trials: int):
    """Ray's trial table, with our columns, at most every 30 s (Ray's default is 5 s)."""
    from ray.tune import CLIReporter
    return CLIReporter(parameter_columns={"spec/trial_id": "trial"},
                       metric_columns={"step": "step", "train_loss": "loss", "aurac": "AURAC"},
                       max_report_frequency=30, max_progress_rows=max(20, n_trials), max_column_length=40)


def _start_tracking(exp: Experiment, out: Path, uri: str, trials: list[TrialSpec], config_path: str | None,
                    job: str, default_store: bool) -> dict:
    """A new sweep: its MLflow parent run, then sweep.json (what --resume reads back)."""
    exp_id, parent = tracking.start_sweep_run(
        uri, exp.tracking.experiment or exp.name, f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
        params={"model": exp.model, "trials": len(trials), "config": config_path or "-"},
        tags={"mlora.config": json.dumps(exp.model_dump(mode="json"))[:5000], "ray.submission_id": job},
        artifact_location=(out / "mlartifacts").as_uri() if default_store else None)
    state = {"tracking_uri": uri, "experiment_id": exp_id, "parent_run_id": parent,
             "experiment": exp.model_dump(mode="json"), "trials": [t.as_dict() for t in trials]}
    write_json(out / SWEEP_FILE, state)
    if config_path:
        shutil.copy2(config_path, out / "experiment.yaml")
    return state


def run_sweep(exp: Experiment, config_path: str | None = None, resume: bool = False, overwrite: bool = False,
              tracking_uri: str | None = None, output_dir: str | None = None) -> int:
    from ray import tune

    if output_dir:
        exp = exp.model_copy(update={"output_dir": output_dir})
    out = exp.out_dir.resolve()
    state = prepare_output_dir(out, resume, overwrite)
    uri = (state or {}).get("tracking_uri") or tracking_uri or exp.tracking_uri
    trials = plan(exp)
    job = submission_id()  # the `ray job submit` id, or '': tagged on the sweep and every trial run
    res = exp.resources
    with ThreadPoolExecutor(1) as pool:
        # a new sweep's MLflow store is set up (SQLite schema migrations, parent run: ~4 s of
        # Python) while this thread mostly waits for Ray's processes to come up (~5-12 s)
        default_store = exp.tracking.uri is None and tracking_uri is None
        started = None if state else pool.submit(_start_tracking, exp, out, uri, trials, config_path, job,
                                                 default_store)
        _init_ray(res.max_concurrent_trials * res.workers_per_trial * int(max(1, res.cpus_per_worker)))
        state = state if started is None else started.result()
    searched = sum(g.max_trials for g in search_groups(exp))
    print(f"sweep {exp.name}: {len(trials)} trials" + (f" + up to {searched} searched" if searched else "") +
          f" -> {out}\nMLflow: {uri} (parent run {state['parent_run_id']})", flush=True)
    ctx = {"experiment": state["experiment"], "output_dir": str(out), "tracking_uri": uri,
           "experiment_id": state["experiment_id"], "parent_run_id": state["parent_run_id"],
           "storage_path": str(out / "ray"), "submission_id": job}
    trainable = tune.with_resources(trial_driver, trial_resources(res))
    # who retries a failed trial: Tune on the tune path, Ray Train's worker group on the train path
    tune_retries = res.max_failures if execution(res) == "tune" else 0
    tune_path = out / "ray" / "tune"
    if resume and tune.Tuner.can_restore(str(tune_path)):
        tuner = tune.Tuner.restore(str(tune_path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        groups = search_groups(exp)
        search = _search_config(exp, trials, groups, ctx) if groups else \
            {"param_space": {"spec": tune.grid_search(state["trials"]), "ctx": ctx}, "num_samples": 1}
        tuner = tune.Tuner(
            trainable,
            param_space=search["param_space"],
            tune_config=tune.TuneConfig(num_samples=search["num_samples"], search_alg=search.get("search_alg"),
                                        max_concurrent_trials=res.max_concurrent_trials,
                                        scheduler=_scheduler(exp),
                                        # a trial ASHA stops is still logging (or inside its TorchTrainer):
                                        # Tune cannot hand its actor to the next trial; start fresh ones
                                        reuse_actors=not exp.early_stopping.asha),
            run_config=tune.RunConfig(name="tune", storage_path=str(out / "ray"), verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=tune_retries),
                                      # tune path: the last two checkpoints of each trial (train path: Train's own)
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                      progress_reporter=_reporter(len(trials) + sum(g.max_trials for g in groups))),
        )
    grid = tuner.fit()
    return finish_sweep(out, state, grid)


def _search_config(exp: Experiment, trials: list[TrialSpec], groups: list, ctx: dict) -> dict:
    """Tune settings for a sweep with searched arms: one SweepSearcher hands out every trial."""
    from .search import SweepSearcher
    searcher = SweepSearcher(trials, groups, ctx, exp.eval.rules[0])
    return {"param_space": {}, "search_alg": searcher, "num_samples": len(trials) + sum(g.max_trials for g in groups)}


def _scheduler(exp: Experiment):
    """ASHA on the validation loss at each progress report, within each arm (search.PerArmASHA)."""
    if not exp.early_stopping.asha:
        return None
    from ray.tune.schedulers import ASHAScheduler

    from .search import PerArmASHA
    es = exp.early_stopping
    budget = {t.arm: t.budget for _, t in arms_of(exp)}
    # stop_last_trials=False: a trial that reaches max_t ends by itself, after logging its results
    return PerArmASHA(lambda arm: ASHAScheduler(time_attr="step", metric="val_loss", mode="min",
                                                grace_period=es.grace_period, reduction_factor=es.reduction_factor,
                                                max_t=exp.training.steps * budget.get(arm, 1), stop_last_trials=False))


def finish_sweep(out: Path, state: dict, grid) -> int:
    """Mark stopped trials, print the summary, write the report, register; exit code."""
    uri = state["tracking_uri"]
    runs = {r.data.tags.get("mlora.trial_id"): r for r in tracking.trial_runs(uri, state["parent_run_id"])}
    failed = []
    for r in grid:
        tid = r.config["spec"]["trial_id"]
        run = runs.get(tid)
        running = run is not None and run.info.status == "RUNNING"
        if r.error is not None or (r.metrics or {}).get("failed"):  # raised, or ended without a result
            failed.append(tid)
            if running:  # its process was killed until no retry was left: nothing else marks the run
                tracking.fail_trial(uri, run.info.run_id, _first_line(r.error) or "trial process lost")
        elif running:  # stopped early (ASHA) before its final log
            tracking.fail_trial(uri, run.info.run_id, "stopped early by the scheduler")
    from .registry import register_sweep
    from .report import write_report
    from .results import load_output_dir, print_summary
    _, result = load_output_dir(out, uri)   # computed once: the summary, report and registry share it
    summary = print_summary(result)
    # the trials' results are safe in MLflow already: a failing report or registration is
    # reported, never fatal (`mlora report` / `mlora register` redo them)
    try:
        print(f"report: {write_report(out, result)}")
    except Exception as e:  # noqa: BLE001
        print(f"report: failed ({type(e).__name__}: {e}); retry with `mlora report {out}`", file=sys.stderr)
    exp = Experiment.model_validate(state["experiment"])
    if exp.registry.enabled:
        try:
            print(f"registered: {register_sweep(out, result)}")
        except ValueError as e:
            print(f"registry: skipped ({e})")
        except Exception as e:  # noqa: BLE001
            print(f"registry: failed ({type(e).__name__}: {e}); retry with `mlora register {out}`", file=sys.stderr)
    tracking.end_sweep_run(uri, state["parent_run_id"], len(failed), summary)
    # a tracking server is its own UI; a local store (SQLite) needs `mlflow ui` started on it
    ui = uri if uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1"
    print(f"\nMLflow UI: {ui}", flush=True)
    if failed:
        print(f"{len(failed)} of {len(grid)} trials failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
