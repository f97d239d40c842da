#!/usr/bin/env bash
# What `greta chat`'s cache reuse saves: one scripted conversation (greedy, so both runs
# give the same replies) with the reuse and with --no-cache-reuse, each turn's prompt
# tokens, tokens computed and prefill time side by side. Runs on whatever backend `auto`
# picks (BACKEND=cpu|gpu to force one); GRETA=path to another binary.
#   tools/bench/chat_reuse.sh            # the default model
#   MODEL=path.gguf tools/bench/chat_reuse.sh
set -euo pipefail
GRETA=${GRETA:-target/release/greta}
BACKEND=${BACKEND:-auto}
N=${N:-64}
args=(chat --json --temperature 0 -n "$N" --backend "$BACKEND")
[ -n "${MODEL:-}" ] && args+=(--model "$MODEL")
conversation='Why is the sky blue?
Explain it to a five-year-old.
What colour is the sky on Mars, and why?
Summarise the three answers in one sentence.
Give me a short poem about it.
Thank you!'
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%s\n' "$conversation" | "$GRETA" "${args[@]}" > "$tmp/reuse.jsonl" 2> "$tmp/reuse.err"
printf '%s\n' "$conversation" | "$GRETA" "${args[@]}" --no-cache-reuse > "$tmp/whole.jsonl" 2> "$tmp/whole.err"
head -1 "$tmp/reuse.err"
python3 - "$tmp/reuse.jsonl" "$tmp/whole.jsonl" <<'PY'
import json, sys
reuse = [json.loads(l) for l in open(sys.argv[1])]
whole = [json.loads(l) for l in open(sys.argv[2])]
print("turn | prompt | reused | computed | prefill ms (reuse) | prefill ms (whole) | ratio | same reply")
print("---|---|---|---|---|---|---|---")
t_r = t_w = 0.0
for r, w in zip(reuse, whole):
    t_r += r["prefill_ms"]; t_w += w["prefill_ms"]
    print(f'{r["turn"]} | {r["prompt_tokens"]} | {r["reused_tokens"]} | {r["computed_tokens"]} | '
          f'{r["prefill_ms"]:.1f} | {w["prefill_ms"]:.1f} | {w["prefill_ms"] / r["prefill_ms"]:.2f}x | '
          f'{r["text"] == w["text"]}')
print(f"all turns: {t_r:.0f} ms against {t_w:.0f} ms of prefill ({t_w / t_r:.2f}x)")
PY
