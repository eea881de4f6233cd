#!/usr/bin/env bash
# A local rehearsal of the cluster path (docs/cluster.md): a 2-node Ray cluster on this machine
# (head + one worker node), `ray job submit ... -- mlora sweep CONFIG`, the MLflow summary of
# the trial runs, then both nodes stopped.
#
#   scripts/local_cluster_demo.sh [CONFIG] [OUTPUT_DIR]
#     CONFIG      experiment YAML (default: experiments/tiny.yaml, ~8 min on 2 cores)
#     OUTPUT_DIR  the sweep's output dir (default: outputs/local-cluster-demo); must not hold a sweep
#   env MLORA_DEMO_WORKDIR  the job's --working-dir (default: the repo root when CONFIG is inside
#                           it, else CONFIG's folder); CONFIG is passed relative to it
#       MLORA_DEMO_KEEP=1   keep the Ray temp dirs (session logs) after the run
#       MLORA_DEMO_HEAD_CPUS  CPUs the head offers trials (default 2; 0: every trial on the worker node)
#       MLORA_VENV_BIN      the venv's bin (default: .venv/bin of this checkout)
#
# Isolated from any other Ray on the machine: its own --temp-dir per node, free ports picked at
# start, the dashboard / job API on 127.0.0.1 only. The GCS, raylet and agent ports still listen
# on all interfaces (and Ray 2.60 turns a loopback --node-ip-address into the host's IP,
# services.resolve_ip_for_localhost), so token auth with a fresh token (RAY_AUTH_MODE=token +
# RAY_AUTH_TOKEN_PATH), the same for both nodes and `ray job submit`, keeps others out.
# It never runs `ray stop` (that kills every Ray on the host): on exit it stops exactly the
# processes its own `ray start`s created, found by a marker in their environment, by PID.
# Exit status: the job's (0 = sweep succeeded).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV_BIN=${MLORA_VENV_BIN:-$ROOT/.venv/bin}
# the venv first on PATH *before* `ray start`: Ray workers and the job's entrypoint inherit it,
# so `mlora` and the project's packages resolve there
export PATH="$VENV_BIN:$PATH"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export RAY_USAGE_STATS_ENABLED=0
unset RAY_ADDRESS

CONFIG=$(realpath -m "${1:-$ROOT/experiments/tiny.yaml}")
OUT=$(realpath -m "${2:-$ROOT/outputs/local-cluster-demo}")
[ -f "$CONFIG" ] || { echo "local_cluster_demo: no such config: $CONFIG" >&2; exit 2; }
[ -x "$VENV_BIN/ray" ] && [ -x "$VENV_BIN/mlora" ] || { echo "local_cluster_demo: no ray/mlora in $VENV_BIN (make setup)" >&2; exit 2; }
if [ -n "${MLORA_DEMO_WORKDIR:-}" ]; then
  WORKDIR=$(realpath "$MLORA_DEMO_WORKDIR")
elif [[ "$CONFIG" == "$ROOT"/* ]]; then
  WORKDIR=$ROOT
else
  WORKDIR=$(dirname "$CONFIG")
fi
[[ "$CONFIG" == "$WORKDIR"/* ]] || { echo "local_cluster_demo: $CONFIG is not inside the working dir $WORKDIR" >&2; exit 2; }
JOB_CONFIG=${CONFIG#"$WORKDIR"/}

# One short base dir (Ray's socket paths must stay under ~107 chars): head/worker temp dirs + token.
BASE=$(mktemp -d /tmp/mlrd-XXXXXX)
MARK="MLORA_DEMO_CLUSTER=$BASE"   # in the environment of every process our `ray start`s create

say() { echo "== [${SECONDS}s] $*"; }

our_pids() {  # processes carrying our marker (Ray daemons, workers, the job driver), never this shell
  local d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = "$$" ] && continue
    grep -qsFxz -- "$MARK" "$d/environ" 2>/dev/null && echo "$pid"
  done
  return 0
}

cleanup() {
  local rc=$? pids i
  trap - EXIT INT TERM
  pids=$(our_pids)
  if [ -n "$pids" ]; then
    say "stopping the demo cluster: $(echo $pids | wc -w) processes (SIGTERM)"
    kill -TERM $pids 2>/dev/null || true
    for i in $(seq 1 16); do  # GCS may linger on SIGTERM (metrics export retries): 8 s, then SIGKILL
      pids=$(our_pids); [ -z "$pids" ] && break; sleep 0.5
    done
    if [ -n "$pids" ]; then
      say "still running after 8 s, SIGKILL: $(echo $pids)"
      kill -KILL $pids 2>/dev/null || true
    fi
    say "demo cluster stopped"
  fi
  if [ "${MLORA_DEMO_KEEP:-0}" = 1 ]; then
    say "Ray logs kept: $BASE/head/session_latest/logs $BASE/worker/session_latest/logs"
  else
    rm -rf "$BASE"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Token auth, consistently for both nodes and the job client (Ray >= 2.59 turns it on for local
# clusters anyway; a private token file keeps ~/.ray out of it).
"$VENV_BIN/python" -c "import secrets; print(secrets.token_hex(32))" > "$BASE/token"
chmod 600 "$BASE/token"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$BASE/token"

# Free ports for everything that would otherwise take a fixed default (6379, 8265, 10001, 52365...).
read -r GCS DASH CLIENT H_AGENT H_AGENT_GRPC H_RTENV H_METRICS H_NM H_OM W_AGENT W_AGENT_GRPC W_RTENV \
  W_METRICS W_NM W_OM < <("$VENV_BIN/python" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(15)]
for s in socks:
    s.bind(("0.0.0.0", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
OBJ_STORE=$((200 * 1024 * 1024))   # small object stores: two nodes share this machine's /dev/shm

say "ray start --head (127.0.0.1:$GCS, dashboard 127.0.0.1:$DASH, temp $BASE/head)"
env "$MARK" ray start --head --node-ip-address=127.0.0.1 --port="$GCS" \
  --dashboard-host=127.0.0.1 --dashboard-port="$DASH" --include-dashboard=true \
  --ray-client-server-port="$CLIENT" --dashboard-agent-listen-port="$H_AGENT" \
  --dashboard-agent-grpc-port="$H_AGENT_GRPC" --runtime-env-agent-port="$H_RTENV" \
  --metrics-export-port="$H_METRICS" --node-manager-port="$H_NM" --object-manager-port="$H_OM" \
  --num-cpus="${MLORA_DEMO_HEAD_CPUS:-2}" --object-store-memory="$OBJ_STORE" --temp-dir="$BASE/head" --disable-usage-stats >"$BASE/head-start.log" 2>&1 \
  || { cat "$BASE/head-start.log" >&2; exit 1; }

say "ray start (worker node, temp $BASE/worker)"
# MLORA_DEMO_NODE tells the worker node's processes apart (tests kill that node alone)
env "$MARK" MLORA_DEMO_NODE="$BASE/worker" ray start --address="127.0.0.1:$GCS" --node-ip-address=127.0.0.1 \
  --dashboard-agent-listen-port="$W_AGENT" --dashboard-agent-grpc-port="$W_AGENT_GRPC" \
  --runtime-env-agent-port="$W_RTENV" --metrics-export-port="$W_METRICS" \
  --node-manager-port="$W_NM" --object-manager-port="$W_OM" \
  --num-cpus=1 --object-store-memory="$OBJ_STORE" --temp-dir="$BASE/worker" --disable-usage-stats >"$BASE/worker-start.log" 2>&1 \
  || { cat "$BASE/worker-start.log" >&2; exit 1; }
# `ray start` returns once the worker's raylet runs, before the GCS lists it as alive: wait
# (up to 60 s) for both nodes so that the job can use the worker's CPU from its first trial
both_nodes() { [ "$(grep -cE "^ +1 node_" <<<"$STATUS")" -ge 2 ]; }
STATUS=""
for i in $(seq 1 120); do
  STATUS=$(ray status --address="127.0.0.1:$GCS" 2>/dev/null || true)
  both_nodes && break
  sleep 0.5
done
grep -E "^ +[0-9]+ node_|CPU" <<<"$STATUS" || true
both_nodes || { echo "local_cluster_demo: the worker node did not join within 60 s" >&2; cat "$BASE/worker-start.log" >&2; exit 1; }

SUBMISSION_ID=${MLORA_DEMO_SUBMISSION_ID:-mlora-demo-$(date +%Y%m%d-%H%M%S)}
say "ray job submit --address http://127.0.0.1:$DASH --working-dir $WORKDIR -- mlora sweep $JOB_CONFIG --output-dir $OUT"
set +e
ray job submit --address "http://127.0.0.1:$DASH" --submission-id "$SUBMISSION_ID" \
  --working-dir "$WORKDIR" --runtime-env-json '{"excludes": [".git", ".venv", "outputs"]}' \
  -- mlora sweep "$JOB_CONFIG" --output-dir "$OUT"
JOB_RC=$?
set -e
say "job $SUBMISSION_ID done (ray job submit exit $JOB_RC)"

if [ -f "$OUT/sweep.json" ]; then
  say "MLflow: the sweep's trial runs"
  "$VENV_BIN/python" - "$OUT" <<'EOF' || true
import json, sys
from orchestrator import tracking
state = json.load(open(f"{sys.argv[1]}/sweep.json"))
uri, parent = state["tracking_uri"], state["parent_run_id"]
runs = {r.data.tags.get("mlora.trial_id"): r for r in tracking.trial_runs(uri, parent)}
print(f"tracking {uri}  parent run {parent}")
for t in state["trials"]:
    r = runs.get(t["trial_id"])
    if r is None:
        print(f"  {t['trial_id']:<34} (no run)")
        continue
    m, tags = r.data.metrics, r.data.tags
    print(f"  {t['trial_id']:<34} {r.info.status:<9} aurac {m.get('aurac', float('nan')):.3f}  "
          f"ray.job_id={tags.get('ray.job_id', '')!r} ray.trial_id={tags.get('ray.trial_id', '')!r}")
print(f"report: {sys.argv[1]}/report/index.html (rewrite it: mlora report {sys.argv[1]})")
from orchestrator.finish import ui_hint
print(f"browse: {ui_hint(uri)}")
EOF
fi
exit "$JOB_RC"
