#!/usr/bin/env bash
# bench/sweep.sh: on a machine with N GPUs, the GPT under every sharded or pipelined Fulgur
# strategy beside the PyTorch anchor's matching mode, in one call, alternating pair by pair (anchor,
# then Fulgur). Appends JSON lines to ONE file: first a header (date, device, exact command), then
# per pair the anchor's line and Fulgur's line, or one {"skipped": ..., "reason": ...} line. Ends
# with a table printed by bench/summarize-sweep.mjs. The pairs are bench/sweep-pairs.json.
# Run `bench/sweep.sh --help` for the options; bench/SWEEP.md says what is compared and the targets.
set -uo pipefail

usage() {
  cat <<'EOF'
Usage: bench/sweep.sh [options]

Runs each pair of bench/sweep-pairs.json: the PyTorch anchor (torchrun --nproc_per_node N
gpt_torch.py MODE), then `fulgur bench --config C --devices N --strategy S`, and appends the JSON
lines to one results file. A pair whose Fulgur strategy is not registered is skipped with a reason.

Options:
  --devices N      ranks (GPUs) per run (default: the GPU count from nvidia-smi; 2 under --dry-run
                   when there is no nvidia-smi)
  --config NAME    tiny | small | 1b (default 1b; tiny under --dry-run)
  --anchor PATH    the anchor script (default .carry/gpt_torch.py if present, else ../shared/bench/gpt_torch.py)
  --out FILE       the results file, appended to (default bench/results/DATE-GPU-xN-CONFIG-sweep.jsonl;
                   under --dry-run a file in $TMPDIR); the runs' own output goes to FILE less .jsonl, plus .log
  --only a,b       only these pairs (names: the "pair" column of the table)
  --pairs FILE     the pairs table (default bench/sweep-pairs.json)
  --timeout S      seconds a single run may take before it is stopped (default 1800; 300 under --dry-run)
  --dry-run        on the CPU, no torch: runs Fulgur with --accelerator cpu --steps 2 --warmup 1 and
                   records the anchor commands it would run instead of running them
  -h, --help       this text

Environment: PP_MICRO (anchor micro-batches of the pipeline pairs, default 8).
Exit status: 0 when every pair ran or was skipped with a reason, 1 when a run failed (recorded
as an "error" line), 2 for a bad option (nothing is run or written).
EOF
}

die() { echo "sweep.sh: $*" >&2; exit 2; }

# Shell words, quoted only where needed, so recorded commands can be pasted back into a shell.
quote() {
  local a s="" q="'\\''"
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then s+="$a "; else s+="'${a//\'/$q}' "; fi
  done
  printf '%s' "${s% }"
}
invoked=$(quote "$0" "$@")
caller_pwd=$PWD
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lib="$repo/bench/sweep-lib.mjs"

devices_note="" devices="" config="" anchor="" out="" only="-" pairs_file="" timeout_s="" dry_run=0
while [ $# -gt 0 ]; do
  opt=$1
  case $opt in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry_run=1; shift; continue ;;
    --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; opt=$1 ;;
  esac
  case $opt in
    --devices | --config | --anchor | --out | --only | --pairs | --timeout)
      [ $# -ge 2 ] || die "$opt needs a value"
      case $2 in --*) die "$opt needs a value, got the option '$2'" ;; esac
      case $opt in
        --devices) devices=$2 ;;
        --config) config=$2 ;;
        --anchor) anchor=$2 ;;
        --out) out=$2 ;;
        --only) only=$2 ;;
        --pairs) pairs_file=$2 ;;
        --timeout) timeout_s=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown option '$opt' (see bench/sweep.sh --help)" ;;
  esac
done

abs() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$caller_pwd" "$1" ;; esac; }

# --- check everything before running anything ---
if [ -n "$devices" ] && ! [[ $devices =~ ^[1-9][0-9]*$ ]]; then
  die "--devices must be a positive integer, got '$devices'"
fi
[ -n "$config" ] || { [ $dry_run = 1 ] && config=tiny || config=1b; }
case $config in
  tiny) sizes=(64 2 4 64 8) ;;
  small) sizes=(128 4 4 128 16) ;;
  1b) sizes=() ;;  # the anchor's default sizes are the 1b GPT
  *) die "--config must be one of tiny, small, 1b, got '$config'" ;;
esac
[ -n "$timeout_s" ] || { [ $dry_run = 1 ] && timeout_s=300 || timeout_s=1800; }
[[ $timeout_s =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds, got '$timeout_s'"
if [ "$only" != "-" ] && [ -z "${only//[ ,]/}" ]; then die "--only needs at least one pair name"; fi
pp_micro=${PP_MICRO:-8}
[[ $pp_micro =~ ^[1-9][0-9]*$ ]] || die "PP_MICRO must be a positive integer, got '$pp_micro'"
pairs_file=$(abs "${pairs_file:-$repo/bench/sweep-pairs.json}")
[ -f "$pairs_file" ] || die "no pairs table at $pairs_file"
command -v node > /dev/null || die "node is not on PATH"
bin_rel=packages/cli/dist/bin.js
[ -f "$repo/$bin_rel" ] || die "$bin_rel is missing: build the CLI first (npx nx run @fulgur/cli:build)"

gpu_count=0 gpu_name="" gpu_driver=""
if command -v nvidia-smi > /dev/null && gpus=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2> /dev/null) && [ -n "$gpus" ]; then
  gpu_count=$(printf '%s\n' "$gpus" | wc -l | tr -d ' ')
  gpu_name=$(printf '%s\n' "$gpus" | head -1 | sed 's/, *[^,]*$//')
  gpu_driver=$(printf '%s\n' "$gpus" | head -1 | sed 's/.*, *//')
fi
if [ $dry_run = 0 ]; then
  [ "$gpu_count" -gt 0 ] || die "nvidia-smi finds no GPU; use --dry-run on a machine without GPUs"
  [ -n "$devices" ] || devices=$gpu_count
  [ "$devices" -le "$gpu_count" ] || die "--devices $devices, but nvidia-smi lists $gpu_count GPU(s)"
  command -v torchrun > /dev/null || die "torchrun is not on PATH (the anchor needs PyTorch)"
else
  if [ -z "$devices" ]; then
    if [ "$gpu_count" -gt 0 ]; then devices=$gpu_count; else devices=2 devices_note="no GPU listed by nvidia-smi; --dry-run uses --devices 2"; fi
  fi
fi

# The anchor: given, else the repository's ignored .carry/ copy, else the shared one.
if [ -n "$anchor" ]; then
  anchor=$(abs "$anchor")
elif [ -f "$repo/.carry/gpt_torch.py" ]; then
  anchor=.carry/gpt_torch.py
else
  anchor=../shared/bench/gpt_torch.py
fi
if [ $dry_run = 0 ]; then
  (cd "$repo" && [ -f "$anchor" ]) || die "no anchor script at $anchor (give --anchor PATH)"
fi

if [ -z "$out" ]; then
  if [ $dry_run = 1 ]; then
    # CPU figures are no benchmark: keep them out of bench/results unless asked.
    out="${TMPDIR:-/tmp}/fulgur-sweep-dryrun-$(date -u +%F)-x${devices}-${config}.jsonl"
  else
    slug=$(printf '%s' "$gpu_name" | tr 'A-Z' 'a-z' | sed 's/^nvidia //; s/[^a-z0-9]\{1,\}/-/g; s/^-//; s/-$//')
    out="$repo/bench/results/$(date -u +%F)-${slug}-x${devices}-${config}-sweep.jsonl"
  fi
else
  out=$(abs "$out")
fi
log="${out%.jsonl}.log"

work=$(mktemp -d "${TMPDIR:-/tmp}/fulgur-sweep.XXXXXX") || die "cannot make a temporary directory"
trap 'rm -rf "$work"' EXIT

# Which pairs run, and why the others do not (exits 2 here on an unknown --only name).
(cd "$repo" && node "$bin_rel" strategies --json > "$work/strategies.json" 2> "$work/strategies.err") ||
  { echo "sweep.sh: \`fulgur strategies --json\` failed:" >&2; cat "$work/strategies.err" >&2; exit 1; }
(cd "$repo" && node "$bin_rel" bench --help > "$work/bench-help.txt" 2>&1) || true
node "$lib" plan "$pairs_file" "$only" "$work/strategies.json" "$work/bench-help.txt" "$work/pairs.json" > "$work/plan.tsv" || exit $?

mkdir -p "$(dirname "$out")" || die "cannot create the directory of $out"
[ -n "$devices_note" ] && echo "sweep.sh: $devices_note" >&2

emit() { # one JSON line, appended to the results file and shown
  local line
  line=$(node "$lib" obj "$@") || { echo "sweep.sh: could not build a JSON line" >&2; return 1; }
  printf '%s\n' "$line" >> "$out"
  printf '%s\n' "$line"
}

# --- the header ---
if [ "$gpu_count" -gt 0 ]; then
  device=$(node "$lib" obj name "$gpu_name" driver "$gpu_driver" "#gpus" "$gpu_count")
else
  cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo 2> /dev/null | head -1)
  device=$(node "$lib" obj name cpu cpu "${cpu:-unknown}" "#cores" "$(nproc 2> /dev/null || echo 0)" "#gpus" 0)
fi
commit=$(git -C "$repo" rev-parse --short HEAD 2> /dev/null || echo unknown)
[ -n "$(git -C "$repo" status --porcelain 2> /dev/null | head -1)" ] && commit="$commit+dirty"
dry_json=false; [ $dry_run = 1 ] && dry_json=true
note="-"
[ "$config" != 1b ] && note="the anchor's vocabulary is always 32000: only the 1b config is the same model on both sides"
header=(date "$(date -u +%FT%TZ)" @device "$device" command "$invoked" cwd "$caller_pwd" commit "$commit"
  config "$config" "#devices" "$devices" @dry_run "$dry_json" anchor_script "$anchor" pairs_file "$pairs_file"
  "#pp_micro" "$pp_micro" "#timeout_s" "$timeout_s" log "$log" @pairs "$(cat "$work/pairs.json")")
[ "$note" != - ] && header+=(note "$note")
emit "${header[@]}"
echo "sweep.sh: results -> $out (runs' output -> $log)" >&2

# Runs a command from the repository root under the timeout; stdout to $1, stderr to $2.
run_capture() {
  local so=$1 se=$2
  shift 2
  local t=()
  command -v timeout > /dev/null && t=(timeout --kill-after=30 "$timeout_s")
  (cd "$repo" && ${t[@]+"${t[@]}"} "$@" > "$so" 2> "$se" < /dev/null)
}

# Appends a run's output to the log under a title.
to_log() {
  local f
  {
    printf '==== %s ====\n' "$1"
    for f in "${@:2}"; do
      cat "$f"
      [ -n "$(tail -c 1 "$f")" ] && echo
    done
  } >> "$log"
}

failures=0
while IFS=$'\t' read -r -u 3 pair amode fstrat pipeline target options reason; do
  if [ "$reason" != - ]; then
    echo "sweep.sh: skipping $pair (PyTorch $amode <-> Fulgur $fstrat): $reason" >&2
    emit pair "$pair" skipped "$fstrat" anchor "$amode" reason "$reason"
    continue
  fi

  # PyTorch first.
  aenv=()
  [ "$pipeline" = 1 ] && aenv=(env "PP_MICRO=$pp_micro")
  acmd=(${aenv[@]+"${aenv[@]}"} torchrun --nproc_per_node "$devices" "$anchor" "$amode" ${sizes[@]+"${sizes[@]}"})
  acmd_s=$(quote "${acmd[@]}")
  acmd_s=${acmd_s#env }
  if [ $dry_run = 1 ]; then
    emit pair "$pair" anchor "$amode" @dry_run true would_run "$acmd_s"
  else
    echo "sweep.sh: $pair: PyTorch $amode ..." >&2
    run_capture "$work/a.out" "$work/a.err" "${acmd[@]}"
    rc=$?
    to_log "$pair: $acmd_s (exit $rc)" "$work/a.out" "$work/a.err"
    res=$(grep '^RESULT ' "$work/a.out" | tail -1 | sed 's/^RESULT //')
    if [ $rc = 0 ] && [ -n "$res" ]; then
      emit pair "$pair" anchor "$amode" command "$acmd_s" @result "$res"
    else
      failures=$((failures + 1))
      emit pair "$pair" anchor "$amode" command "$acmd_s" error "exit code $rc$([ -z "$res" ] && echo ', no RESULT line')" \
        stderr_tail "$(tail -n 15 "$work/a.err")"
    fi
  fi

  # Then Fulgur.
  fcmd=(node "$bin_rel" bench --config "$config" --devices "$devices" --strategy "$fstrat")
  [ "$options" != - ] && fcmd+=(--strategy-options "$options")
  # The pipeline's batch is PP_MICRO micro-batches of the config's, as the anchor's.
  [ "$pipeline" = 1 ] && fcmd+=(--micro-batches "$pp_micro")
  [ $dry_run = 1 ] && fcmd+=(--accelerator cpu --steps 2 --warmup 1)
  fcmd_s=$(quote "${fcmd[@]}")
  echo "sweep.sh: $pair: Fulgur $fstrat ..." >&2
  run_capture "$work/f.out" "$work/f.err" "${fcmd[@]}"
  rc=$?
  to_log "$pair: $fcmd_s (exit $rc)" "$work/f.out" "$work/f.err"
  res=$(grep '^{' "$work/f.out" | tail -1)
  if [ $rc = 0 ] && [ -n "$res" ]; then
    emit pair "$pair" fulgur "$fstrat" command "$fcmd_s" @result "$res"
  else
    failures=$((failures + 1))
    emit pair "$pair" fulgur "$fstrat" command "$fcmd_s" error "exit code $rc$([ -z "$res" ] && echo ', no JSON line')" \
      stderr_tail "$(tail -n 15 "$work/f.err")"
  fi
done 3< "$work/plan.tsv"

echo >&2
node "$repo/bench/summarize-sweep.mjs" "$out" || failures=$((failures + 1))
if [ $failures -gt 0 ]; then
  echo "sweep.sh: $failures run(s) failed; their lines carry \"error\" and the output is in $log" >&2
  exit 1
fi
exit 0
