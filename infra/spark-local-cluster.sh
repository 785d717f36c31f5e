#!/usr/bin/env bash
# A Spark standalone cluster (one master, N workers) or a Spark Connect server on loopback,
# started from the PySpark distribution installed in .venv (no separate Spark download).
#
#   infra/spark-local-cluster.sh start-cluster [MASTER_PORT] [WORKERS] [CORES_PER_WORKER] [MEMORY_PER_WORKER]
#   infra/spark-local-cluster.sh stop-cluster
#   infra/spark-local-cluster.sh start-connect [PORT] [MASTER] [SPARK-SUBMIT OPTIONS...]
#   infra/spark-local-cluster.sh stop-connect
#
# Then point farmwatch at it:
#   FARMWATCH_SPARK__MASTER=spark://127.0.0.1:7077 farmwatch nightly
#   FARMWATCH_SPARK__REMOTE=sc://127.0.0.1:15002  farmwatch nightly
# A Connect server loads its own packages and settings (the client's spark.packages do not
# apply), e.g. for an s3a:// lake: start-connect 15002 spark://127.0.0.1:7077 \
#   --packages <the s3a coordinates in jobs/core/session.py, JVM_PACKAGES> \
#   --conf spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:9000 (see infra/README.md)
#
# State (pid files, logs, worker dirs) goes under $FARMWATCH_SPARK_STATE (default var/spark).
# tests/conftest.py starts the same processes the same way (ports chosen at run time).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
spark_home="$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
state="${FARMWATCH_SPARK_STATE:-$root/var/spark}"
mkdir -p "$state"
export SPARK_HOME="$spark_home" PYSPARK_PYTHON="$python" SPARK_LOCAL_IP=127.0.0.1

start_bg() {  # name, command...
  local name="$1"; shift
  nohup "$@" >"$state/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
  echo "$name: pid $(cat "$state/$name.pid"), log $state/$name.log"
}

stop_bg() {  # name
  local pidfile="$state/$1.pid"
  if [[ -f "$pidfile" ]]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
    echo "$1: stopped"
  fi
}

case "${1:-}" in
  start-cluster)
    port="${2:-7077}" workers="${3:-2}" cores="${4:-1}" memory="${5:-4g}"
    start_bg master "$spark_home/bin/spark-class" org.apache.spark.deploy.master.Master \
      --host 127.0.0.1 --port "$port" --webui-port 0
    for i in $(seq 1 "$workers"); do
      mkdir -p "$state/worker-$i"
      start_bg "worker-$i" "$spark_home/bin/spark-class" org.apache.spark.deploy.worker.Worker \
        --host 127.0.0.1 --cores "$cores" --memory "$memory" --webui-port 0 \
        --work-dir "$state/worker-$i" "spark://127.0.0.1:$port"
    done
    echo "master: spark://127.0.0.1:$port"
    ;;
  stop-cluster)
    for pidfile in "$state"/worker-*.pid; do
      [[ -e "$pidfile" ]] && stop_bg "$(basename "$pidfile" .pid)"
    done
    stop_bg master
    ;;
  start-connect)
    port="${2:-15002}" master="${3:-local[*]}"
    shift $(( $# < 3 ? $# : 3 ))
    start_bg connect "$spark_home/bin/spark-submit" \
      --class org.apache.spark.sql.connect.service.SparkConnectServer \
      --master "$master" --conf "spark.connect.grpc.binding.port=$port" \
      --conf spark.ui.enabled=false --conf "spark.pyspark.python=$python" \
      --conf spark.sql.session.timeZone=UTC "$@"
    echo "connect: sc://127.0.0.1:$port"
    ;;
  stop-connect)
    stop_bg connect
    ;;
  *)
    sed -n '2,19p' "$0"
    exit 2
    ;;
esac
