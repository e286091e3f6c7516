#!/bin/sh
# Starts mboxd on a free port, sends one message with curl and checks the mbox with grep; then
# shows a failure rule: with --fail 'data-end:*=452' the same upload fails and nothing is stored.
# Run: MBOXD=/path/to/mboxd sh examples/shell/send.sh
set -eu
dir=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT

start() { # start mboxd with extra flags; sets $addr once the ready file is written
  rm -f "$dir/ready"
  "${MBOXD:-mboxd}" --listen 127.0.0.1:0 --mail-dir "$dir/mail" --ready-file "$dir/ready" \
    --shutdown-grace 1 "$@" >/dev/null &
  pid=$!
  i=0 # wait (at most 10 s) for the ready file, written atomically once mboxd accepts
  while [ ! -s "$dir/ready" ]; do
    i=$((i + 1)); [ "$i" -le 100 ] || { echo "mboxd did not start" >&2; exit 1; }
    sleep 0.1 2>/dev/null || sleep 1 # POSIX sleep takes whole seconds; most take a fraction
  done
  addr=$(head -n 1 "$dir/ready")
}

send() { # send $dir/message to $1@localhost with curl; fails unless it was accepted
  curl --silent --show-error --max-time 10 "smtp://$addr" \
    --mail-from app@example.com --mail-rcpt "$1@localhost" --upload-file "$dir/message"
}

refusal() { # like send, but prints the code of the first refusal (4xx or 5xx) mboxd sent, if any
  curl --verbose --max-time 10 "smtp://$addr" \
    --mail-from app@example.com --mail-rcpt "$1@localhost" --upload-file "$dir/message" 2>&1 |
    sed -n 's/^< \([45][0-9][0-9]\)[ -].*/\1/p' | head -n 1
}

stop() { # SIGTERM; mboxd exits 0 after a clean shutdown, within 10 s here (a grace of 1 s)
  kill "$pid"
  i=0
  while kill -0 "$pid" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -le 100 ] || { echo "mboxd did not exit within 10 s" >&2; exit 1; }
    sleep 0.1 2>/dev/null || sleep 1
  done
  wait "$pid" || { echo "mboxd exited with status $?" >&2; exit 1; }
  pid=
}

printf 'Subject: Report\r\n\r\nAll done.\r\n' > "$dir/message"
start
send bob
grep -q '^Subject: Report$' "$dir/mail/bob"
echo "delivered to $dir/mail/bob"
stop

start --fail 'data-end:*=452'
code=$(refusal carol)
[ "$code" = 452 ] || { echo "expected 452 at the end of the data, got ${code:-no refusal}" >&2; exit 1; }
[ ! -e "$dir/mail/carol" ]
echo "refused with $code as the rule says; nothing stored"
stop
