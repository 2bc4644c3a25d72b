# shellcheck shell=bash
# Time budget for the GPU scripts (sourced): a lent GPU machine is paid by the second and one call
# may run at most 10 minutes, so every step runs under a cap that also respects a shared deadline.
#   budget_start SECONDS      sets BUDGET_DEADLINE (epoch s) unless the caller exported one already
#   budget_left               seconds until the deadline (0 when past; a large number when unset)
#   capped CAP CMD...         runs CMD in a session of its own under `timeout`, for at most
#                             min(CAP, budget_left - BUDGET_RESERVE_S) seconds; afterwards every
#                             process still in that session (mpirun ranks a killed test left
#                             behind) is killed, so the next step finds the GPU free.
#                             Returns CMD's status, 124 when it was stopped at its cap, and 125
#                             without running it when under 5 seconds were left.
# BUDGET_RESERVE_S (default 0): seconds kept back for the steps after this one.

budget_start() {
  if [ -z "${BUDGET_DEADLINE:-}" ]; then
    BUDGET_DEADLINE=$(($(date +%s) + $1))
    export BUDGET_DEADLINE
  fi
}

budget_left() {
  if [ -z "${BUDGET_DEADLINE:-}" ]; then
    echo 999999
    return
  fi
  local left=$((BUDGET_DEADLINE - $(date +%s)))
  echo $((left > 0 ? left : 0))
}

# Kills every process whose session id is $1 (read from /proc: the GPU image may have no pkill).
kill_session() {
  local p stat rest sess
  for p in /proc/[0-9]*; do
    stat="$(cat "$p/stat" 2>/dev/null)" || continue
    rest="${stat##*) }"
    read -r _ _ _ sess _ <<< "$rest"
    [ "$sess" = "$1" ] && kill -KILL "${p#/proc/}" 2>/dev/null
  done
  return 0
}

capped() {
  local cap=$1 left sidfile sid rc
  shift
  left=$(($(budget_left) - ${BUDGET_RESERVE_S:-0}))
  [ "$left" -lt "$cap" ] && cap=$left
  if [ "$cap" -lt 5 ]; then
    echo "capped: not run, the time budget is spent: $*" >&2
    return 125
  fi
  sidfile="$(mktemp)"
  # The inner shell is the new session's leader: its pid is the session id.
  setsid --wait bash -c 'echo $$ > "$0"; exec timeout -k 10 "$@"' "$sidfile" "$cap" "$@"
  rc=$?
  sid="$(cat "$sidfile")"
  rm -f "$sidfile"
  [ -n "$sid" ] && kill_session "$sid"
  case "$rc" in 124 | 137) echo "capped: stopped after ${cap}s: $*" >&2 ;; esac
  return "$rc"
}
