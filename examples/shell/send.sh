#!/bin/sh
# Starts mboxd on a free port, sends one message with curl, and checks the mbox with grep.
# Run: MBOXD=/path/to/mboxd sh examples/shell/send.sh
set -eu
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
"${MBOXD:-mboxd}" --listen 127.0.0.1:0 --mail-dir "$dir/mail" --ready-file "$dir/ready" >/dev/null &
pid=$!
# Wait (at most 10 s) for the ready file, written atomically once mboxd accepts.
i=0
while [ ! -s "$dir/ready" ]; do
  i=$((i + 1)); [ "$i" -le 100 ] || { echo "mboxd did not start" >&2; exit 1; }
  sleep 0.1
done
addr=$(head -n 1 "$dir/ready")
printf 'Subject: Report\r\n\r\nAll done.\r\n' > "$dir/message"
curl --silent --show-error --max-time 10 "smtp://$addr" \
  --mail-from app@example.com --mail-rcpt bob@localhost --upload-file "$dir/message"
grep -q '^Subject: Report$' "$dir/mail/bob"
echo "delivered to $dir/mail/bob"
