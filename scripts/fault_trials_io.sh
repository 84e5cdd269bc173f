# The files / signals / run-directory trials of issue 14, sourced by
# scripts/fault_trials.sh (it provides $tfm, $work, $text, $details and the
# tried/clean/crash/silent tables). Each trial here is a scenario rather
# than one command, and is judged by io_verdict:
#   crash  - tfm died of a signal we did not send, hung (timeout), exited with
#            a status other than the documented ones, or printed an uncaught
#            exception;
#   silent - tfm exited as documented but left something wrong: temporary
#            files, a checkpoint that does not load (tfm inspect), a run that
#            does not resume, a broken metrics.jsonl, an error without the
#            file it is about, or two writers in one run directory;
#   clean  - none of that.
# Categories: disk-full (root only: small tmpfs mounts), kill -9 during
# saves, SIGINT/SIGTERM at random moments, two writers on one run directory.
#
#   FAULT_TRIALS_IO_ROUNDS=N   trials per random class (default 8)

io_rounds=${FAULT_TRIALS_IO_ROUNDS:-8}
RANDOM=14  # reproducible delays

io_record() {  # io_record CATEGORY VERDICT DESCRIPTION REASON
  local cat=$1 verdict=$2
  [ -n "${tried[$cat]+x}" ] || { categories+=("$cat"); tried[$cat]=0 clean[$cat]=0 crash[$cat]=0 silent[$cat]=0; }
  tried[$cat]=$((tried[$cat] + 1))
  case $verdict in
    clean) clean[$cat]=$((clean[$cat] + 1)) ;;
    crash) crash[$cat]=$((crash[$cat] + 1)) ;;
    *) silent[$cat]=$((silent[$cat] + 1)) ;;
  esac
  printf '%-10s %-6s %-6s %s\n    %s\n' "$cat" scene "$verdict" "$3" "$4" >>"$details"
}

# A config for the tiny GPT training into $1 with a checkpoint every step
# ($2: max_steps, default 200; $3: log_every, default 1).
io_config() {
  cat <<EOF
model: {n_layers: 1, n_heads: 2, d_model: 16, block_size: 16}
data: {path: $text}
schedule: {kind: constant}
train: {max_steps: ${2:-200}, batch_size: 4, eval_every: 0, log_every: ${3:-1}, checkpoint_every: 1, keep_last: 2, threads: 1, out_dir: $1}
EOF
}

io_why=""  # the first problem io_check_dir / io_check_error found
io_bad=""  # crash or silent for that problem

io_fail() {  # io_fail crash|silent REASON: keeps the first problem
  [ -n "$io_why" ] || { io_bad=$1 io_why=$2; }
}

# A status from a run we did not signal: 0 or 1 are the documented ones.
io_check_status() {  # io_check_status STATUS ERRFILE WHAT
  if [ "$1" -ge 124 ] && [ "$1" -le 127 ]; then io_fail crash "$3: timed out or could not run (status $1)"
  elif [ "$1" -gt 1 ]; then io_fail crash "$3: status $1"
  fi
  if grep -q "terminate called\|Aborted\|Segmentation\|std::bad_alloc\|AddressSanitizer" "$2"; then
    io_fail crash "$3: $(grep -m1 "terminate called\|Aborted\|Segmentation\|std::bad_alloc\|AddressSanitizer" "$2")"
  fi
}

# After a status-1 exit: exactly one "tfm: error:" line, containing $2.
io_check_error() {  # io_check_error ERRFILE NEEDLE WHAT
  local n
  n=$(grep -c "^tfm: error: " "$1")
  if [ "$n" -ne 1 ]; then io_fail silent "$3: $n error lines: $(head -c 200 "$1" | tr '\n' ' ')"
  elif ! grep "^tfm: error: " "$1" | grep -q -- "$2"; then
    io_fail silent "$3: the error does not say '$2': $(grep "^tfm: error: " "$1")"
  fi
}

# The run directory: no temporaries, whole metrics lines, the checkpoint loads.
io_check_dir() {  # io_check_dir DIR WHAT [killed]: a killed process may leave temporaries (the next start removes them)
  local d=$1 tmp
  [ -d "$d" ] || return 0
  tmp=$(find "$d" -name '*.tmp*' 2>/dev/null | head -3 | tr '\n' ' ')
  [ -z "$tmp" ] || [ "${3:-}" = killed ] || io_fail silent "$2: temporary files left: $tmp"
  if [ -s "$d/metrics.jsonl" ]; then
    if [ "$(tail -c 1 "$d/metrics.jsonl" | od -An -c | tr -d ' ')" != '\n' ]; then
      io_fail silent "$2: metrics.jsonl ends in a half line"
    elif grep -v -q '^{.*}$' "$d/metrics.jsonl"; then
      io_fail silent "$2: metrics.jsonl holds a line that is not one JSON object"
    fi
  fi
  if [ -e "$d/last.h5" ]; then
    local st
    timeout 60 "$tfm" inspect "$d/last.h5" >"$work/io_inspect.out" 2>"$work/io_inspect.err"
    st=$?
    io_check_status $st "$work/io_inspect.err" "$2: tfm inspect last.h5"
    [ $st -eq 0 ] || io_fail silent "$2: last.h5 does not load: $(head -c 200 "$work/io_inspect.err")"
  fi
}

# Resumes DIR to its max_steps (or starts afresh when no checkpoint was
# written yet) and checks the result.
io_resume() {  # io_resume DIR CONFIG WHAT
  local st
  if [ -e "$1/last.h5" ]; then
    timeout 120 "$tfm" train --resume "$1" >"$work/io_resume.out" 2>"$work/io_resume.err"
  else
    rm -rf "$1"
    timeout 120 "$tfm" train "$2" >"$work/io_resume.out" 2>"$work/io_resume.err"
  fi
  st=$?
  io_check_status $st "$work/io_resume.err" "$3: resume"
  [ $st -eq 0 ] || io_fail silent "$3: resume failed: $(grep -m1 "tfm: error" "$work/io_resume.err")"
  io_check_dir "$1" "$3: after resume"
}

io_verdict() {  # io_verdict CATEGORY DESCRIPTION
  if [ -n "$io_why" ]; then io_record "$1" "$io_bad" "$2" "$io_why"; else io_record "$1" clean "$2" "ok"; fi
  io_why="" io_bad=""
}

io_ms_to_s() { awk -v ms="$1" 'BEGIN { printf "%.3f", ms / 1000 }'; }

# ---------------------------------------------------------------- disk full
if [ "$(id -u)" -ne 0 ]; then
  echo "fault_trials: disk-full trials skipped: they mount small tmpfs file systems, which needs root" >&2
else
  io_mnt=$work/io_tmpfs
  mkdir -p "$io_mnt"
  if ! mount -t tmpfs -o size=3m tmpfs "$io_mnt" 2>"$work/io_mount.err"; then
    echo "fault_trials: disk-full trials skipped: cannot mount a tmpfs ($(cat "$work/io_mount.err"))" >&2
  else
    umount "$io_mnt"
    # Free space left on a 3 MB tmpfs before the run: none at all (at start),
    # less than a checkpoint, a few checkpoints (while saving), and room for
    # the checkpoints but not the growing logs.
    for leave in 0 4096 65536 200000 600000 1500000; do
      mount -t tmpfs -o size=3m tmpfs "$io_mnt"
      if [ "$leave" -gt 0 ]; then
        avail=$(df --output=avail -B1 "$io_mnt" | tail -1)
        head -c $((avail > leave ? avail - leave : 0)) /dev/zero >"$io_mnt/filler" 2>/dev/null
      else
        head -c 4000000 /dev/zero >"$io_mnt/filler" 2>/dev/null
      fi
      io_config "$io_mnt/run" 100000 1 >"$work/io_disk.yaml"
      timeout 60 "$tfm" train "$work/io_disk.yaml" >"$work/io.out" 2>"$work/io.err"
      st=$?
      io_check_status $st "$work/io.err" "train"
      if [ $st -eq 0 ]; then io_fail silent "train: 100000 steps on a full disk exited 0"; fi
      [ $st -eq 1 ] && io_check_error "$work/io.err" "No space left on device" "train"
      [ $st -eq 1 ] && ! grep "^tfm: error: " "$work/io.err" | grep -q "$io_mnt" &&
        io_fail silent "train: the error does not name the file: $(grep "^tfm: error: " "$work/io.err")"
      io_check_dir "$io_mnt/run" "after the full disk"
      # Free the space (remount larger) and resume to a near step.
      mount -o remount,size=64m "$io_mnt"
      rm -f "$io_mnt/filler"
      if [ -e "$io_mnt/run/last.h5" ]; then
        step=$("$tfm" inspect "$io_mnt/run/last.h5" --json 2>/dev/null | sed -n 's/^ *"step": \([0-9]*\).*/\1/p' | head -1)
        timeout 120 "$tfm" train --resume "$io_mnt/run" --set train.max_steps=$(( ${step:-0} + 3 )) >"$work/io_resume.out" 2>"$work/io_resume.err"
        st=$?
        io_check_status $st "$work/io_resume.err" "resume after freeing space"
        [ $st -eq 0 ] || io_fail silent "resume after freeing space failed: $(grep -m1 "tfm: error" "$work/io_resume.err")"
        io_check_dir "$io_mnt/run" "after resume"
      fi
      io_verdict disk-full "3 MB tmpfs with $leave bytes free: train, inspect, free space, resume"
      umount "$io_mnt"
    done
  fi
fi

# ---------------------------------------------------------------- kill -9 during saves
# A checkpoint every step: most of the time goes into saves, so a random
# kill lands in one more often than not.
for i in $(seq "$io_rounds"); do
  d=$work/io_kill$i
  io_config "$d" 200 1 >"$work/io_kill$i.yaml"
  ms=$((50 + RANDOM % 1500))
  "$tfm" train "$work/io_kill$i.yaml" >"$work/io.out" 2>"$work/io.err" &
  pid=$!
  sleep "$(io_ms_to_s $ms)"
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  io_check_dir "$d" "killed after $ms ms" killed
  io_resume "$d" "$work/io_kill$i.yaml" "killed after $ms ms"
  io_verdict kill-9 "kill -9 after $ms ms (checkpoint every step), inspect, resume"
done

# ---------------------------------------------------------------- signals at random moments
# SIGINT or SIGTERM from the first milliseconds (before and during the
# re-exec that sets OMP_WAIT_POLICY, data loading, the first step) to the
# middle of the run. Documented: the run checkpoints and exits 0.
for i in $(seq $((2 * io_rounds))); do
  d=$work/io_sig$i
  io_config "$d" 200 1 >"$work/io_sig$i.yaml"
  if [ $((i % 2)) -eq 0 ]; then sig=INT; else sig=TERM; fi
  case $((i % 4)) in
    0) ms=$((RANDOM % 5)) ;;      # the first milliseconds
    1) ms=$((RANDOM % 60)) ;;     # start-up
    *) ms=$((60 + RANDOM % 1500)) ;;
  esac
  if [ $((i % 3)) -eq 0 ]; then
    env -u OMP_WAIT_POLICY "$tfm" train "$work/io_sig$i.yaml" >"$work/io.out" 2>"$work/io.err" &
  else
    "$tfm" train "$work/io_sig$i.yaml" >"$work/io.out" 2>"$work/io.err" &
  fi
  pid=$!
  sleep "$(io_ms_to_s $ms)"
  kill -s $sig $pid 2>/dev/null
  # A hang past the signal is a failure: allow 30 s.
  for _ in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  if kill -0 $pid 2>/dev/null; then
    kill -9 $pid
    io_fail crash "SIG$sig after $ms ms: still running 30 s later"
  fi
  wait $pid
  st=$?
  early=""
  if [ $st -eq $((128 + $(kill -l $sig))) ] && [ ! -e "$d" ]; then
    # Killed by the signal's default action before tfm's first constructor
    # installed the handler (the dynamic loader was still running): nothing
    # was written, as for any program. Not a crash.
    early=" (arrived before the handler existed: killed, nothing written)"
    st=0
  fi
  io_check_status $st "$work/io.err" "SIG$sig after $ms ms"
  [ $st -eq 1 ] && io_fail silent "SIG$sig after $ms ms: exit 1: $(grep -m1 "tfm: error" "$work/io.err")"
  if [ $st -eq 0 ] && [ -z "$early" ] && ! grep -q "done:\|resume" "$work/io.out" "$work/io.err"; then
    io_fail silent "SIG$sig after $ms ms: exit 0 without saying how to resume"
  fi
  io_check_dir "$d" "SIG$sig after $ms ms"
  io_resume "$d" "$work/io_sig$i.yaml" "SIG$sig after $ms ms"
  io_verdict signals "SIG$sig after $ms ms$early$([ $((i % 3)) -eq 0 ] && echo ' (with the OMP re-exec)'), inspect, resume"
done

# ---------------------------------------------------------------- two writers on one run directory
# Two `tfm train` on one out_dir: started together (both new), the second
# while the first runs, and a --resume while the first runs. Exactly one may
# train: the other exits 1 naming the holder's PID; the metrics have no
# duplicate steps.
for i in $(seq "$io_rounds"); do
  d=$work/io_two$i
  io_config "$d" 300 1 >"$work/io_two$i.yaml"
  mode=$((i % 3))
  case $mode in
    0) gap=0 ;;
    1) gap=$(io_ms_to_s $((RANDOM % 40))) ;;
    2) gap=$(io_ms_to_s $((300 + RANDOM % 500))) ;;
  esac
  "$tfm" train "$work/io_two$i.yaml" >"$work/io_a.out" 2>"$work/io_a.err" &
  pa=$!
  sleep "$gap"
  if [ $mode -eq 2 ] && [ -e "$d/last.h5" ]; then
    "$tfm" train --resume "$d" >"$work/io_b.out" 2>"$work/io_b.err" &
    how="--resume after $gap s"
  else
    "$tfm" train "$work/io_two$i.yaml" >"$work/io_b.out" 2>"$work/io_b.err" &
    how="second start after $gap s"
  fi
  pb=$!
  timeout_pid() {  # waits up to 60 s for $1, returns its status (124 on a hang)
    for _ in $(seq 600); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$1" 2>/dev/null; then kill -9 "$1"; wait "$1" 2>/dev/null; return 124; fi
    wait "$1"
  }
  timeout_pid $pa; sa=$?
  timeout_pid $pb; sb=$?
  io_check_status $sa "$work/io_a.err" "first writer"
  io_check_status $sb "$work/io_b.err" "second writer"
  ok=$(( (sa == 0) + (sb == 0) ))
  if [ $ok -ne 1 ]; then
    io_fail silent "$how: $ok of the two writers finished (statuses $sa, $sb)"
  else
    if [ $sa -ne 0 ]; then loser=$work/io_a.err; else loser=$work/io_b.err; fi
    io_check_error "$loser" "PID" "the refused writer"
  fi
  if [ -s "$d/metrics.jsonl" ]; then
    dups=$(sed -n 's/.*"step":\([0-9]*\).*/\1/p' "$d/metrics.jsonl" | sort | uniq -d | head -3 | tr '\n' ' ')
    [ -z "$dups" ] || io_fail silent "$how: metrics.jsonl has duplicate steps: $dups"
  fi
  io_check_dir "$d" "$how"
  io_verdict two-writers "two tfm train on one out_dir, $how"
done
