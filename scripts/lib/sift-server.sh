# Sourced by the test scripts. start_sift_server LOG [sift serve flags...]: starts `$sift serve`
# on a free port with its log in LOG, waits until it serves, and sets $server_pid, $server_port.
start_sift_server() {
  local log=$1
  shift
  "$sift" serve --port 0 "$@" 2>"$log" &
  server_pid=$!
  for _ in $(seq 1 600); do
    grep -q "loaded; serving" "$log" && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  server_port=$(grep -o 'address=127.0.0.1:[0-9]*' "$log" | head -1 | cut -d: -f2)
  if [ -z "$server_port" ] || ! grep -q "loaded; serving" "$log"; then
    echo "sift serve did not start:" >&2
    cat "$log" >&2
    return 1
  fi
}
