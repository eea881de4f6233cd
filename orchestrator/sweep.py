"""Run a planned sweep on Ray: one Tune trial per TrialSpec.

    mlora sweep CONFIG -> Tuner(one trial per TrialSpec + the sweep's TrialContext)
    -> trial_driver (a Tune function trainable): opens the trial's MLflow run, logs config.yaml
      tune path (one worker):  worker_loop(WorkerConfig) in the trial's own process, which holds its CPUs/GPUs
      train path (DDP):        TorchTrainer(worker_loop, N workers) from a trial holding ~0
    -> mlora_core.run -> the final report carries final.json (a TrialOutcome) + adapter
    -> trial_driver logs the outcome into the trial's nested MLflow run.
(The records: messages.py.)

This module builds and runs the Tuner; Ray is started or joined by ray_cluster.py, trials train
in worker.py, searchers and schedulers are search.py's, and finish.py closes the sweep. Ray 2.60
runs Train v2: on the train path the TorchTrainer is built inside the Tune function and forwards
rank-0 metrics with TuneReportCallback. `resources.execution` picks the path (see execution()).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mlora_core.models import model_provenance, prepare_builtin_model, require_cached

from . import tracking
from .config import Experiment
from .finish import finish_sweep
from .load import first_line
from .messages import SweepRef, TrackingTarget, TrialContext, TrialOutcome, WorkerConfig
from .metrics import search_score
from .plan import TrialSpec, arms_of, budgeted_steps, plan, resolved_config, run_config, search_groups, trial_params
from .ray_cluster import init_ray, submission_id
from .record import NewSweep, discard_old, prepare_output_dir, restore_old, start_record, tracking_uri_of
from .redact import check_tracking_uri, redact_uri, warn_inline_secret
from .worker import worker_loop


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

    spec, ctx = TrialSpec.from_dict(config["spec"]), TrialContext.from_dict(config["ctx"])
    exp = ctx.experiment
    out, uri = Path(ctx.output_dir), ctx.sweep.tracking_uri
    # the sweep's cache by its absolute path: this process's working directory is Tune's trial dir
    rc = dataclasses.replace(run_config(exp, spec), cache_dir=str(out / "cache"))
    params = {**trial_params(exp, spec, rc), **model_provenance(exp.model)}
    tags = {"mlora.arm": spec.arm, "ray.trial_id": tune.get_context().get_trial_id() or "",
            "ray.job_id": os.environ.get("RAY_JOB_ID", ""), "ray.submission_id": ctx.submission_id}
    run_id = tracking.patiently(tracking.trial_run, ctx, spec, params, tags)
    m = tracking.patiently(tracking.finished_metrics, uri, run_id)
    if m is not None:  # done before an interrupted driver could record it: no re-run
        score = search_score(m, spec.method, spec.rank, exp.eval.primary_rule)   # a search hears of it again
        tune.report({"final": 1, "skipped": 1, **{k: v for k, v in m.items() if k == "aurac" or k.startswith("acc_rank_")},
                     **({"search_score": score} if score is not None else {})})
        return
    tracking.patiently(tracking.log_config, uri, run_id, resolved_config(exp, spec, rc))
    cfg = WorkerConfig(rc, str(out / "trials" / spec.trial_id), TrackingTarget(uri, run_id, exp.tracking.system_metrics))
    record = functools.partial(_record_outcome, uri, run_id)
    try:
        if execution(exp.resources) == "tune":
            from .worker import TuneSession
            outcome = worker_loop(cfg, TuneSession())
            record(outcome, outcome.adapter_path)
        else:
            _train_with_torch_trainer(cfg, spec, ctx, exp.resources, record)
    except (SystemExit, KeyboardInterrupt):  # Tune stopped the trial (scheduler), or Ctrl-C: not a failure;
        # finish_sweep marks a stopped run, --resume continues an interrupted one
        raise
    except BaseException as e:  # noqa: BLE001  includes Ray's TrainingFailedError: keep the reason, mark FAILED
        reason = first_line(e)
        tracking.fail_trial(uri, run_id, reason)
        raise TrialFailed(reason) from None


def _record_outcome(uri: str, run_id: str, outcome: TrialOutcome, adapter_dir: str | None) -> None:
    """A trial's outcome into the trial's MLflow run: FINISHED with its results, or FAILED once
    with the reason when training ended without a result that a retry could change. A store that
    is away is waited for (tracking.patiently); should it stay away, the trial fails, and its
    retry or `--resume` logs the result kept in its final checkpoint without training again."""
    if not outcome.ok:
        tracking.patiently(tracking.fail_trial, uri, run_id, outcome.error)
    else:
        has_adapter = bool(adapter_dir) and Path(adapter_dir).is_dir()
        tracking.patiently(tracking.log_trial_result, uri, run_id, outcome, adapter_dir if has_adapter else None)


def _train_with_torch_trainer(cfg: WorkerConfig, spec: TrialSpec, ctx: TrialContext, res, record) -> None:
    """The train path: a TorchTrainer of N workers (DDP) runs worker_loop; rank 0's final report
    carries the payload and the adapter as a checkpoint in the sweep's storage, which `record` logs."""
    import ray.train
    from ray.tune.integration.ray_train import TuneReportCallback

    per_worker = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.gpus_per_worker else {})}
    trainer = _trainer_class()(
        worker_loop,
        train_loop_config=cfg.to_dict(),   # plain data to every worker; worker_loop reads it back
        scaling_config=ray.train.ScalingConfig(num_workers=res.workers_per_trial, use_gpu=res.gpus_per_worker > 0,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=spec.trial_id,  # deterministic: a restarted trial finds its Train run and checkpoints
            storage_path=str(Path(ctx.storage_path) / "train"),
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
        record(TrialOutcome.from_json(Path(d, "final.json").read_text()), str(adapter) if adapter.is_dir() else None)


@functools.cache  # one class per process, not one per trial
def _trainer_class():
    """TorchTrainer, minus Ray Data's DatasetManager actor when no Ray Dataset is passed (ours
    never are: each worker loads and shards its data itself). Ray Train v2 starts that actor
    for every run regardless; like every Train actor it imports ray.data, pandas and pyarrow
    (~3 s CPU), which on 2 cores comes out of the trial training beside it.

    Ray has no public way to leave that callback out, so this overrides a private hook, checked
    on the pinned Ray 2.60: `TorchTrainer._create_default_callbacks` (Train v2's
    DataParallelTrainer) and `ray.train.v2._internal.callbacks.datasets.DatasetsCallback`. Should
    either move in another Ray, the plain TorchTrainer is used (same results, ~3 s more a trial)."""
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

def _reporter(n_trials: int):
    """Ray's trial table, with our columns, at most every 30 s (Ray's default is 5 s)."""
    from ray.tune import CLIReporter
    return CLIReporter(parameter_columns={"spec/trial_id": "trial"},
                       metric_columns={"step": "step", "train_loss": "loss", "aurac": "AURAC"},
                       max_report_frequency=30, max_progress_rows=max(20, n_trials), max_column_length=40)


@dataclass(frozen=True)
class SweepOptions:
    """How `mlora sweep` was asked to run (its flags)."""
    config_path: str | None = None     # the YAML (copied into the output dir)
    resume: bool = False
    overwrite: bool = False
    tracking_uri: str | None = None    # overrides the config's
    output_dir: str | None = None      # overrides the config's


def run_sweep(exp: Experiment, opts: SweepOptions = SweepOptions()) -> int:
    """Check what can be checked (model cache, tracking URI, output dir), then record, run, finish.
    An explicit URI (--tracking-uri, MLFLOW_TRACKING_URI) wins over a resumed sweep's stored one."""
    if opts.output_dir:
        exp = exp.model_copy(update={"output_dir": opts.output_dir})
    require_cached(exp.model, exp.model_revision)   # offline and not in the hub cache: before anything is written
    warn_inline_secret(check_tracking_uri(opts.tracking_uri or exp.tracking_uri))
    out = exp.out_dir.resolve()
    job = submission_id()  # the `ray job submit` id, or '': tagged on the sweep and every trial run
    trials = plan(exp)   # colliding trial ids refused before the output dir is touched
    state, aside = prepare_output_dir(out, opts.resume, opts.overwrite)
    try:
        if state:   # resuming: in memory the URI it is reached at, on disk the redacted one stays
            state = {**state, "tracking_uri": check_tracking_uri(tracking_uri_of(state, opts.tracking_uri))}
        state = _start(exp, opts, out, state, job, trials)
    except BaseException:
        restore_old(out, aside)   # --overwrite: the old sweep comes back unless the new one got recorded
        discard_old(aside)
        raise
    discard_old(aside)
    uri = state["tracking_uri"]
    searched = sum(g.max_trials for g in search_groups(exp))
    print(f"sweep {exp.name}: {len(trials)} trials" + (f" + up to {searched} searched" if searched else "") +
          f" -> {out}\nMLflow: {redact_uri(uri)} (parent run {state['parent_run_id']})", flush=True)
    ctx = TrialContext(Experiment.model_validate(state["experiment"]), str(out), SweepRef(uri, state["parent_run_id"]),
                       state["experiment_id"], str(out / "ray"), job)
    tune_results = _tuner(exp, trials, state, ctx, opts.resume).fit()
    return finish_sweep(out, state, tune_results)


def _start(exp: Experiment, opts: SweepOptions, out: Path, state: dict | None, job: str,
           trials: list[TrialSpec]) -> dict:
    """The sweep's record (a new sweep's MLflow parent run and sweep.json), written while Ray starts."""
    uri = (state or {}).get("tracking_uri") or opts.tracking_uri or exp.tracking_uri
    res = exp.resources
    with ThreadPoolExecutor(2) as pool:
        # a new sweep's MLflow store is set up (SQLite schema migrations, parent run: ~4 s of
        # Python) while this thread mostly waits for Ray's processes to come up (~5-12 s)
        default_store = exp.tracking.uri is None and opts.tracking_uri is None
        started = None if state else pool.submit(start_record, exp, trials,
                                                 NewSweep(out, uri, opts.config_path, job, default_store))
        # a builtin model (the embedded default, a converted packaged one) is built once, here, with
        # every core, before any trial starts: not by the first trial on its one core while the others wait
        model = pool.submit(prepare_builtin_model, exp.model)
        init_ray(res.max_concurrent_trials * res.workers_per_trial * int(max(1, res.cpus_per_worker)))
        state = state if started is None else started.result()
        model.result()
    return state


def _tuner(exp: Experiment, trials: list[TrialSpec], state: dict, ctx: TrialContext, resume: bool):
    """The sweep's Tuner: restored from its storage on --resume, else one trial per planned TrialSpec
    (a grid over them) or a SweepSearcher that also hands out the searched arms' trials."""
    from ray import tune

    res = exp.resources
    trainable = tune.with_resources(trial_driver, trial_resources(res))
    # who retries a failed trial: Tune on the tune path, Ray Train's worker group on the train path
    tune_retries = res.max_failures if execution(res) == "tune" else 0
    tune_path = Path(ctx.storage_path) / "tune"
    if resume and tune.Tuner.can_restore(str(tune_path)):
        return tune.Tuner.restore(str(tune_path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    groups = search_groups(exp)
    search = _search_config(exp, trials, groups, ctx) if groups else \
        {"param_space": {"spec": tune.grid_search(state["trials"]), "ctx": ctx.to_dict()}, "num_samples": 1}
    return tune.Tuner(
        trainable,
        param_space=search["param_space"],
        tune_config=tune.TuneConfig(num_samples=search["num_samples"], search_alg=search.get("search_alg"),
                                    max_concurrent_trials=res.max_concurrent_trials,
                                    scheduler=_scheduler(exp),
                                    # a trial ASHA stops is still logging (or inside its TorchTrainer):
                                    # Tune cannot hand its actor to the next trial; start fresh ones
                                    reuse_actors=not exp.early_stopping.asha),
        run_config=tune.RunConfig(name="tune", storage_path=ctx.storage_path, verbose=1,
                                  failure_config=tune.FailureConfig(max_failures=tune_retries),
                                  # tune path: the last two checkpoints of each trial (train path: Train's own)
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  progress_reporter=_reporter(len(trials) + sum(g.max_trials for g in groups))),
    )


def _search_config(exp: Experiment, trials: list[TrialSpec], groups: list, ctx: TrialContext) -> dict:
    """Tune settings for a sweep with searched arms: one SweepSearcher hands out every trial."""
    from .search import SweepSearcher
    searcher = SweepSearcher(trials, groups, ctx, exp.eval.primary_rule)
    return {"param_space": {}, "search_alg": searcher, "num_samples": len(trials) + sum(g.max_trials for g in groups)}


def _scheduler(exp: Experiment):
    """ASHA on the validation loss at each progress report, within each arm (search.PerArmASHA)."""
    if not exp.early_stopping.asha:
        return None
    from ray.tune.schedulers import ASHAScheduler

    from .search import PerArmASHA
    es = exp.early_stopping
    steps = {t.arm: budgeted_steps(exp.training.steps, t.budget) for _, t in arms_of(exp)}
    # stop_last_trials=False: a trial that reaches max_t ends by itself, after logging its results
    return PerArmASHA(lambda arm: ASHAScheduler(time_attr="step", metric="val_loss", mode="min",
                                                grace_period=es.grace_period, reduction_factor=es.reduction_factor,
                                                max_t=steps.get(arm, exp.training.steps), stop_last_trials=False))


