#!/usr/bin/env bash
# docker/ built and run for real, as a user runs it, on a host with no container registry and no GPU:
#   1. a Debian base made with debootstrap and `docker import` (once; kept as segtune-base:bookworm);
#   2. the segtune image from docker/Dockerfile on that base, torch from PyPI; PostgreSQL from Debian's package;
#   3. the compose stack: PostgreSQL, a Ray head (no trials), two CPU Ray workers, the driver (not a Ray node)
#      running a small demo search with --resume, and the dashboard; no volume shared between the driver and the
#      workers: the artifact store and the resumable states are on the driver's volumes only;
#   4. checks from outside: a worker container killed mid-trial (docker kill) costs its trial one epoch at most:
#      the trial goes on from its state on the other worker; the driver stopped mid-search leaves nothing RUNNING
#      and, started again, resumes to the full trial count; every trial finished with its per-epoch values, on >= 2
#      worker containers, its model in the artifact store; the dashboard answers on loopback; export-model of the
#      best trial from the store;
#   5. everything torn down (images stay: a second run reuses their layers).
# Needs root (dockerd, debootstrap), docker-compose (v1 or v2) and the Debian and PyPI registries.
#   bash docker/smoke.sh            # SMOKE_KEEP=1 leaves the stack up for a look; SMOKE_BUILD_ONLY=1 stops after 2.
set -euo pipefail
cd "$(dirname "$0")"
export DOCKER_BUILDKIT=0  # the legacy builder: Debian's docker.io has no buildx
DOCKER=${DOCKER:-/usr/bin/docker}
if command -v docker-compose >/dev/null; then COMPOSE=(docker-compose); else COMPOSE=("$DOCKER" compose); fi
PROJECT=segtune-smoke
TRIALS=${SMOKE_TRIALS:-10}  # enough that trials still run after the worker kill, for the driver stop
say() { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
elapsed() { echo $(( $(date +%s) - $1 )); }
started=$(date +%s)

"$DOCKER" info >/dev/null 2>&1 || { say "dockerd is not running"; exit 3; }

# 1. the base image
if ! "$DOCKER" image inspect segtune-base:bookworm >/dev/null 2>&1; then
  t=$(date +%s)
  root=$(mktemp -d)
  debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv,tini bookworm "$root" \
    http://deb.debian.org/debian >/dev/null
  tar -C "$root" -c . | "$DOCKER" import - segtune-base:bookworm >/dev/null
  rm -rf "$root"
  say "base image segtune-base:bookworm made with debootstrap in $(elapsed "$t") s"
fi

# 2. the images; pip in the build trusts this host's CA bundle (PIP_CERT), the one way to the registry here
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then cp "$PIP_CERT" build-extra/ca.crt; fi
t=$(date +%s)
"$DOCKER" build -q -f Dockerfile -t segtune:local --label segtune.smoke=1 --build-arg BASE=segtune-base:bookworm \
  ${SMOKE_TORCH:+--build-arg TORCH=$SMOKE_TORCH} ${SMOKE_TORCHVISION:+--build-arg TORCHVISION=$SMOKE_TORCHVISION} \
  .. >/dev/null
say "image segtune:local built in $(elapsed "$t") s"
t=$(date +%s)
"$DOCKER" build -q -t segtune-postgres:local --label segtune.smoke=1 --build-arg BASE=segtune-base:bookworm postgres \
  >/dev/null
say "image segtune-postgres:local built in $(elapsed "$t") s"
# each rebuild leaves the image it replaced untagged (7.5 GB apiece, most of it layers shared with the new one)
"$DOCKER" image prune -f --filter label=segtune.smoke=1 >/dev/null
if [ "${SMOKE_BUILD_ONLY:-}" = 1 ]; then  # .ci/run builds the images while the tests run; the stack comes later
  rm -f build-extra/ca.crt
  exit 0
fi

# 3. the stack, which writes about 3 GB (trials' states and models, Ray's files, PostgreSQL) where docker keeps
# containers and in a temporary folder: a full disk would fail it half-way with errors that do not say so
need_gb=${SMOKE_DISK_GB:-5}
for where in "$("$DOCKER" info -f '{{.DockerRootDir}}')" "${TMPDIR:-/tmp}"; do
  free_gb=$(df -Pk "$where" | awk 'NR == 2 {print int($4 / 1048576)}')
  [ "$free_gb" -ge "$need_gb" ] || { say "FAILED: $free_gb GB free on $where; the stack needs about $need_gb GB"; exit 1; }
done

# every wait below ends by this deadline, so a failure prints what it saw before a caller's own time
# limit (.ci/run's) cuts it off
run_deadline=$(( $(date +%s) + ${SMOKE_TIMEOUT:-900} ))
work=$(mktemp -d)
mkdir -p "$work/runs" "$work/data" "$work/weights" "$work/artifacts"
chmod 777 "$work/runs" "$work/artifacts"  # the containers run as uid 1000
cp -r ../segtune/samples/oxford-pets-sample/oxford-iiit-pet "$work/data/"
cat > "$work/data/smoke.yaml" <<SPEC
study: smoke
dataset: {name: oxford_pets, root: /data, download: false, target: trimap, image_size: 64, val_fraction: 0.25}
space:
  arch: {choice: [Unet, FPN]}
  encoder: resnet18
  lr: {loguniform: [1.0e-3, 1.0e-2]}
  augment: light
  batch_size: 8
search: {trials: $TRIALS, max_epochs: 6, scheduler: none, seed: 0}
resources: {cpus_per_trial: 1, gpus_per_trial: auto}
SPEC
cat > "$work/env" <<ENV
COMPOSE_PROJECT_NAME=$PROJECT
POSTGRES_PASSWORD=smoke-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
RAY_AUTH_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
SEGTUNE_IMAGE=segtune:local
SEGTUNE_SPEC=/data/smoke.yaml
SEGTUNE_DATA=$work/data
SEGTUNE_RUNS=$work/runs
SEGTUNE_ARTIFACTS_DIR=$work/artifacts
SEGTUNE_WEIGHTS=$work/weights
ENV
stack=(-p "$PROJECT" --env-file "$work/env" -f compose.yaml -f compose.cpu.yaml -f compose.local.yaml)
compose() { "${COMPOSE[@]}" "${stack[@]}" "$@"; }
teardown() {
  if [ "${SMOKE_KEEP:-}" != 1 ]; then
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$work" build-extra/ca.crt
  fi
}
trap teardown EXIT
sql() {  # one value from the store (0 while the tables do not exist yet)
  local out
  out=$(compose exec -T postgres psql -U segtune -d segtune -tAc "$1" 2>/dev/null) || true
  echo "${out:-0}"
}

t=$(date +%s)
compose up -d --scale ray-worker=0 --scale ray-worker-cpu=2 > "$work/up.log" 2>&1 || { cat "$work/up.log"; exit 1; }
say "stack up in $(elapsed "$t") s: $(compose ps --services | sort | tr '\n' ' ')"

diagnose() {  # what a failed wait leaves to read: the store's trials, the cluster, the driver's last lines
  say "trials by state: $(sql "select string_agg(state || ' ' || n, ', ') from (select state, count(*) n from trials
                                group by state order by state) s")"
  say "driver container running: $(compose ps -q driver | xargs "$DOCKER" inspect -f '{{.State.Running}}' 2>&1)"
  compose exec -T ray-head ray status 2>&1 | sed -n '/Node status/,/Demands/p' | sed 's/^/    /' || true
  compose logs --no-color --tail 60 driver 2>&1 | cut -c1-300
}
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: until the command succeeds, within the run's own deadline
  local what=$2 since deadline=$(( $(date +%s) + $1 ))
  since=$(date +%s)
  shift 2
  [ "$deadline" -le "$run_deadline" ] || deadline=$run_deadline
  until "$@"; do
    if [ "$(date +%s)" -gt "$deadline" ]; then
      say "FAILED: no $what after $(elapsed "$since") s"
      diagnose; exit 1
    fi
    sleep 3
  done
}
finished() { [ "$(sql "select count(*) from trials where state in ('COMPLETE','PRUNED')")" -ge "$1" ]; }
wait_for 600 "finished trial" finished 1
say "first trial finished after $(elapsed "$started") s in all"

# the dashboard answers on loopback (published as 127.0.0.1:8080 only)
dashboard() { curl -fsS --max-time 5 http://127.0.0.1:8080/api/studies | grep -q '"smoke"'; }
wait_for 120 "dashboard answer" dashboard
say "dashboard answers on 127.0.0.1:8080 with study smoke"

# kill a worker container mid-trial, once its trial has a resumable state: the trial goes on on the other worker
with_state() { [ "$(sql "select count(*) from trials t join trial_user_attributes a using (trial_id)
                          where t.state = 'RUNNING' and a.key = 'state_epoch' and a.value_json::int >= 1")" -ge 1 ]; }
wait_for 600 "trial with a resumable state" with_state
# the node of the running trial with the fewest epochs saved: it still trains when the kill comes (each query of
# the store takes a few seconds here)
host=$(sql "select trim(both '\"' from h.value_json) from trials t
            join trial_user_attributes a on a.trial_id = t.trial_id and a.key = 'state_epoch'
            join trial_user_attributes h on h.trial_id = t.trial_id and h.key = 'node_hostname'
            where t.state = 'RUNNING' and a.value_json::int >= 1 order by a.value_json::int, t.trial_id limit 1")
container=$(for c in $(compose ps -q ray-worker-cpu); do  # an if: a last non-match must not end the script (set -e)
  if [ "$("$DOCKER" inspect -f '{{.Config.Hostname}}' "$c")" = "$host" ]; then echo "$c"; fi; done)
[ -n "$container" ] || { say "FAILED: no worker container is $host"; exit 1; }
"$DOCKER" kill "$container" >/dev/null
say "killed worker $host mid-trial"
# the trial it held when it died (whichever that was by then) runs on elsewhere: Tune restarts it from its state
moved() { [ "$(sql "select count(*) from trial_user_attributes where key = 'restarts'")" -ge 1 ]; }
wait_for 300 "restart of the killed worker's trial" moved
victim=$(sql "select trial_id from trial_user_attributes where key = 'restarts' order by trial_id limit 1")
"$DOCKER" start "$container" >/dev/null  # the worker comes back, as a restarted machine would
say "trial id $victim runs on from its state: restarts recorded"

# stop the driver mid-search (SIGTERM, as docker stop sends): nothing may be left RUNNING
running() { [ "$(sql "select count(*) from trials where state = 'RUNNING'")" -ge 1 ]; }
wait_for 300 "running trial" running
compose stop driver >/dev/null 2>&1
left=$(sql "select count(*) from trials where state = 'RUNNING'")
failed=$(sql "select count(*) from trials t join trial_user_attributes a using (trial_id) where t.state = 'FAIL' and a.key = 'fail_reason' and a.value_json like '%interrupted: SIGTERM%'")
say "driver stopped: $left trials RUNNING, $failed ended FAIL (interrupted: SIGTERM)"
[ "$left" = 0 ] || { say "FAILED: trials left RUNNING after docker stop"; exit 1; }

# start it again: --resume runs the interrupted trials again and reaches the full count
compose start driver >/dev/null 2>&1
done_all() { finished "$TRIALS" && [ "$(compose ps -q driver | xargs "$DOCKER" inspect -f '{{.State.Running}}')" = false ]; }
wait_for 1200 "full trial count" done_all
code=$(compose ps -q driver | xargs "$DOCKER" inspect -f '{{.State.ExitCode}}')

echo
say "trials by state:"
sql "select state, count(*) from trials group by state order by state" | sed 's/^/    /'
say "why the FAIL trials failed (each interrupted one ran again):"
sql "select count(*), left(a.value_json, 90) from trials t join trial_user_attributes a using (trial_id)
     where t.state = 'FAIL' and a.key = 'fail_reason' group by 2 order by 1 desc" | sed 's/^/    /'
epochs=$(sql "select count(*) from trials t where t.state in ('COMPLETE','PRUNED') and (select count(*) from trial_intermediate_values v where v.trial_id = t.trial_id) = (select cast(value_json as int) from trial_user_attributes a where a.trial_id = t.trial_id and a.key = 'epochs_run')")
nodes=$(sql "select count(distinct value_json) from trial_user_attributes a join trials t using (trial_id) where a.key = 'node_id' and t.state in ('COMPLETE','PRUNED')")
hosts=$(sql "select string_agg(distinct value_json, ' ') from trial_user_attributes where key = 'node_hostname'")
retries=$(sql "select count(*) from trial_user_attributes where key = 'retry_of'")
victim_state=$(sql "select state from trials where trial_id = $victim")
victim_values=$(sql "select count(*) from trial_intermediate_values where trial_id = $victim")
models=$(sql "select count(*) from trial_system_attributes where key like 'artifacts:%' and value_json like '%model.pt%'")
say "finished trials with one value per epoch run: $epochs; ran on $nodes Ray nodes (hosts $hosts); $retries re-runs of interrupted trials; driver exit code $code"
say "the killed worker's trial: $victim_state with $victim_values values; models in the artifact store: $models"
compose logs --no-color driver 2>/dev/null | grep -E "resume:|joined|trials on|done:" | tail -4 | sed 's/^/    /'
[ "$(finished "$TRIALS"; echo $?)" = 0 ] && [ "$epochs" -ge "$TRIALS" ] && [ "$nodes" -ge 2 ] && [ "$code" = 0 ] \
  && { [ "$victim_state" = COMPLETE ] || [ "$victim_state" = FAIL ]; } && [ "$models" -ge "$TRIALS" ] \
  || { say "FAILED"; compose logs --tail 60 driver; exit 1; }
[ "$victim_state" = FAIL ] || [ "$victim_values" = 6 ] || { say "FAILED: the moved trial has $victim_values values"; exit 1; }

# the best trial's model leaves the store as ONNX, read by a fresh container of the driver's
timeout 300 "${COMPOSE[@]}" "${stack[@]}" run --rm -T driver segtune export-model smoke -o /runs/best.onnx > "$work/export.log" 2>&1 \
  || { cat "$work/export.log"; say "FAILED: export-model"; exit 1; }
[ -s "$work/runs/best.onnx" ] || { say "FAILED: no best.onnx"; exit 1; }
say "export-model of the best trial from the artifact store: $(grep -m1 '^wrote' "$work/export.log")"
say "PASSED in $(elapsed "$started") s"
