#!/usr/bin/env bash
# tansu, a Kafka-compatible broker (crates.io), for floe's local stack and end-to-end tests.
#
#   infra/local/tansu.sh install            build once into ~/.cache/floe/tansu (≈7 min on 2 cores), reuse after
#   infra/local/tansu.sh start PORT DIR     start on 127.0.0.1:PORT with SQLite storage in DIR; prints the PID
#   infra/local/tansu.sh stop DIR           stop the broker started for DIR (by its PID file only)
#
# The default features of tansu have no storage engine: `libsql` (SQLite, persistent) and `dynostore` (memory://)
# must be enabled.
set -euo pipefail

VERSION=0.6.0
FEATURES=dynostore,libsql
CACHE=${FLOE_CACHE:-$HOME/.cache/floe}
ROOT=$CACHE/tansu-$VERSION
BIN=$ROOT/bin/tansu

install() {
  if [[ -x $BIN ]]; then
    return 0
  fi
  mkdir -p "$ROOT"
  # A separate target dir so the broker's build never mixes with floe's. opt-level 1 without debug info: the
  # broker only carries test traffic, and this halves a cold build (7 min instead of 15-20 on 2 cores), which a
  # fresh CI machine pays inside its time limit.
  CARGO_TARGET_DIR=$CACHE/tansu-target CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=0 cargo install tansu --version "$VERSION" --locked \
    --features "$FEATURES" --root "$ROOT" >&2
  test -x "$BIN"
}

start() {
  local port=$1 dir=$2
  install
  mkdir -p "$dir"
  local url="tcp://127.0.0.1:$port"
  # tansu resolves sqlite:// paths against its working directory (even absolute ones): start it inside DIR.
  (cd "$dir" && exec "$BIN" broker --listener-url "$url" --advertised-listener-url "$url" \
    --storage-engine "sqlite://tansu.db" >tansu.log 2>&1) &
  local pid=$!
  echo "$pid" >"$dir/tansu.pid"
  # Ready when the port accepts connections.
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$pid"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "tansu exited; see $dir/tansu.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "tansu did not listen on $port; see $dir/tansu.log" >&2
  kill "$pid" 2>/dev/null || true
  return 1
}

stop() {
  local dir=$1
  [[ -f $dir/tansu.pid ]] || return 0
  local pid
  pid=$(cat "$dir/tansu.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/tansu.pid"
}

case "${1:-}" in
  install) install ;;
  start) start "$2" "$3" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 install | start PORT DIR | stop DIR" >&2; exit 2 ;;
esac
