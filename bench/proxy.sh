#!/bin/bash
# Proxy benchmark (SPEC 10, issue 17 §4): canaryd vs nginx vs HAProxy, one worker
# each, the same 90/10 sticky split, wrk -t1 -c$CONNS.  Fair by method:
#  - INTERLEAVED: every round runs each peer once (round-robin, the starting peer
#    rotating per round), so drift of the machine (other load, thermal, caches)
#    hits every peer alike; the table gives each peer's median over the rounds.
#  - both upstream kinds: demo-upstream (our epoll server) and nginx serving as
#    the upstreams (a different upstream changes who is the bottleneck).
#  - beside req/s and p99: CPU time per request of each proxy process
#    (utime + stime from /proc/PID/stat over the run, divided by the requests),
#    syscalls per request (strace -c -f -p on a short separate run), TLS rows
#    (new connections/s and keep-alive req/s over TLS, the same certificate for
#    all three), and canaryd's RSS with IDLE_CONNS idle keep-alive clients.
#  - mirror rows: 100% mirrored to a third upstream (canaryd's mirror vs nginx's
#    `mirror`), and canaryd with a shadow 200 ms slower (primary p99 must not move).
#
#   bench/proxy.sh [BUILD_DIR]
#   env: DURATION (s per run, default 5)  ROUNDS (default 5)  CONNS (default 50)
#        IDLE_CONNS (default 10000)  SETS (default "demo nginx tls mirror")
# A quick end-to-end check of the script: DURATION=2 ROUNDS=1 IDLE_CONNS=500.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-50}
IDLE_CONNS=${IDLE_CONNS:-10000}
SETS=${SETS:-demo nginx tls mirror}
work=$(mktemp -d /tmp/canaryd-bench.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

for t in wrk nginx haproxy strace openssl curl python3; do
	command -v $t >/dev/null || { echo "bench: $t missing (scripts/install-deps --bench)"; exit 1; }
done
# 10,000 idle clients: their fds here and canaryd's (inherited) must fit, and
# HAProxy wants 2 x maxconn: the hard limit
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_CONNS + 256)) ]; then
	echo "bench: fd limit $(ulimit -n) too low for IDLE_CONNS=$IDLE_CONNS; lowering it" >&2
	IDLE_CONNS=$(($(ulimit -n) / 2 - 256))
fi
TCK=$(getconf CLK_TCK)

port=17100
np() { port=$((port + 1)); } # the next port, in $port (no subshell: it must advance)
wait_port() { # port
	for _ in $(seq 200); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "bench: nothing listens on $1" >&2
	return 1
}

# ---- upstreams -------------------------------------------------------------
np; UP1=$port; np; UP2=$port; np; UP3=$port; np; UP4=$port
"$build/demo-upstream" --listen 127.0.0.1:$UP1 --name v1 2>/dev/null & pids+=($!)
"$build/demo-upstream" --listen 127.0.0.1:$UP2 --name v2 2>/dev/null & pids+=($!)
"$build/demo-upstream" --listen 127.0.0.1:$UP3 --name v3 2>/dev/null & pids+=($!)
"$build/demo-upstream" --listen 127.0.0.1:$UP4 --name v3 --latency-ms 200 2>/dev/null & pids+=($!)
np; NUP1=$port; np; NUP2=$port
cat >"$work/nginx-up.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $work/nginx-up.pid;
error_log $work/nginx-up-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$NUP1 reuseport; location / { add_header X-Upstream-Version v1; return 200 '{"version":"v1"}'; } }
  server { listen 127.0.0.1:$NUP2 reuseport; location / { add_header X-Upstream-Version v2; return 200 '{"version":"v2"}'; } }
}
CONF
nginx -c "$work/nginx-up.conf" -e "$work/nginx-up-error.log" 2>/dev/null & pids+=($!)
for p in $UP1 $UP2 $UP3 $UP4 $NUP1 $NUP2; do wait_port $p; done

# one certificate for every TLS listener
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 2 \
	-keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" >"$work/combined.pem"

# ---- proxies ---------------------------------------------------------------
declare -A URL PID
canaryd_conf() { # port admin up1 up2 [shadow_port] [tls]
	cat <<CONF
admin:
  listen: 127.0.0.1:$2
  tokens: [{name: bench, secret: bench-token, scopes: [admin]}]
store: sqlite:$work/canaryd-$1.db
workers: 1
listeners:
  - name: public
    listen: 127.0.0.1:$1
$([ -n "${6:-}" ] && echo "    tls: {certs: [{cert: $work/cert.pem, key: $work/key.pem}]}")
    routes: [{match: {path_prefix: /}, service: web}]
services:
  web:
    versions:
      v1: {endpoints: [127.0.0.1:$3]}
      v2: {endpoints: [127.0.0.1:$4]}
$([ -n "${5:-}" ] && echo "      v3: {endpoints: [127.0.0.1:$5]}")
    stable: v1
    sticky: header:x-user-id
$([ -n "${5:-}" ] && echo "    mirror: {version: v3, percent: 100}")
CONF
}
start_canaryd() { # name up1 up2 [shadow_port] [tls]
	local p a scheme=http
	np; p=$port
	np; a=$port
	[ -n "${5:-}" ] && scheme=https
	canaryd_conf "$p" "$a" "$2" "$3" "${4:-}" "${5:-}" >"$work/$1.yaml"
	"$build/canaryd" -c "$work/$1.yaml" 2>"$work/$1.log" &
	pids+=($!)
	PID[$1]=$!
	for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$a/v1/health" && break; sleep 0.05; done
	curl -sf -o /dev/null -X PUT -H 'Authorization: Bearer bench-token' \
		-d '{"canary":"v2","weight":10}' "http://127.0.0.1:$a/v1/services/web/traffic" || true
	URL[$1]="$scheme://127.0.0.1:$p/bench"
}
nginx_conf() { # port up1 up2 [mirror_up] [tls]
	local mirror_up=${4:-} tls=${5:-}
	cat <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $work/nginx-$1.pid;
error_log $work/nginx-$1-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream v1 { server 127.0.0.1:$2; keepalive 64; }
  upstream v2 { server 127.0.0.1:$3; keepalive 64; }
$([ -n "$mirror_up" ] && echo "  upstream v3 { server 127.0.0.1:$mirror_up; keepalive 64; }")
  split_clients "\$http_x_user_id" \$pool { 10% v2; * v1; }
  server {
    listen 127.0.0.1:$1 reuseport$([ -n "$tls" ] && echo " ssl");
$([ -n "$tls" ] && echo "    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_protocols TLSv1.2 TLSv1.3;")
$([ -n "$mirror_up" ] && echo "    location = /_mirror { internal; proxy_pass http://v3\$request_uri; proxy_http_version 1.1; proxy_set_header Connection \"\"; }")
    location / {
$([ -n "$mirror_up" ] && echo "      mirror /_mirror;")
      proxy_pass http://\$pool;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
}
start_nginx() { # name up1 up2 [mirror_up] [tls]
	local p scheme=http
	np; p=$port
	[ -n "${5:-}" ] && scheme=https
	nginx_conf "$p" "$2" "$3" "${4:-}" "${5:-}" >"$work/$1.conf"
	nginx -c "$work/$1.conf" -e "$work/nginx-$p-error.log" 2>/dev/null &
	pids+=($!)
	PID[$1]=$!
	URL[$1]="$scheme://127.0.0.1:$p/bench"
}
start_haproxy() { # name up1 up2 [tls]
	local p scheme=http ssl=""
	np; p=$port
	[ -n "${4:-}" ] && scheme=https && ssl=" ssl crt $work/combined.pem alpn http/1.1"
	cat >"$work/$1.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$p$ssl
  default_backend be
backend be
  balance hdr(x-user-id)
  hash-type consistent
  server v1 127.0.0.1:$2 weight 90
  server v2 127.0.0.1:$3 weight 10
CONF
	haproxy -f "$work/$1.cfg" -db 2>/dev/null &
	pids+=($!)
	PID[$1]=$!
	URL[$1]="$scheme://127.0.0.1:$p/bench"
}

declare -A SET_PEERS
for s in $SETS; do
	case $s in
	demo)
		start_canaryd canaryd $UP1 $UP2
		start_nginx nginx $UP1 $UP2
		start_haproxy haproxy $UP1 $UP2
		SET_PEERS[demo]="canaryd nginx haproxy" ;;
	nginx)
		start_canaryd canaryd-n $NUP1 $NUP2
		start_nginx nginx-n $NUP1 $NUP2
		start_haproxy haproxy-n $NUP1 $NUP2
		SET_PEERS[nginx]="canaryd-n nginx-n haproxy-n" ;;
	tls)
		start_canaryd canaryd-tls $UP1 $UP2 "" tls
		start_nginx nginx-tls $UP1 $UP2 "" tls
		start_haproxy haproxy-tls $UP1 $UP2 tls
		SET_PEERS[tls]="canaryd-tls nginx-tls haproxy-tls" ;;
	mirror)
		start_canaryd canaryd-mirror $UP1 $UP2 $UP3
		start_nginx nginx-mirror $UP1 $UP2 $UP3
		start_canaryd canaryd-mirror-slow $UP1 $UP2 $UP4
		SET_PEERS[mirror]="canaryd-mirror nginx-mirror canaryd-mirror-slow" ;;
	*) echo "bench: unknown set $s" >&2; exit 1 ;;
	esac
done
sleep 0.5
# a peer that does not answer is left out with a reason (canaryd-tls before listener TLS)
declare -A SKIP
for s in $SETS; do
	for peer in ${SET_PEERS[$s]}; do
		if ! curl -sfk -o /dev/null -H 'x-user-id: probe' "${URL[$peer]}"; then
			case $peer in
			canaryd-tls) SKIP[$peer]="needs listener TLS (canaryd did not serve https)" ;;
			*) SKIP[$peer]="did not answer ${URL[$peer]}" ;;
			esac
			echo "bench: skipping $peer: ${SKIP[$peer]}" >&2
		fi
	done
done

cat >"$work/keys.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/bench", {["x-user-id"] = "user-" .. (n % 100000)})
end
LUA
cat >"$work/close.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/bench", {["x-user-id"] = "user-" .. (n % 100000), ["Connection"] = "close"})
end
LUA

to_ms() { # wrk latency "1.23ms" / "800.00us" / "1.02s"
	case "$1" in
	*us) echo "$1" | sed 's/us//' | awk '{printf "%.3f", $1/1000}' ;;
	*ms) echo "$1" | sed 's/ms//' | awk '{printf "%.3f", $1}' ;;
	*s) echo "$1" | sed 's/s//' | awk '{printf "%.3f", $1*1000}' ;;
	*) echo "nan" ;;
	esac
}
cpu_ticks() { # pid -> utime + stime (clock ticks), threads included
	sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
# one run: prints "rps p99_ms cpu_us_per_req"
run_one() { # peer script
	local out t0 t1 reqs rps p99
	t0=$(cpu_ticks "${PID[$1]}")
	out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$work/$2" "${URL[$1]}" 2>&1)
	t1=$(cpu_ticks "${PID[$1]}")
	if echo "$out" | grep -q "Non-2xx\|Socket errors"; then
		echo "bench: errors against $1:" $(echo "$out" | grep -E "Non-2xx|Socket") >&2
	fi
	reqs=$(echo "$out" | awk '/requests in/ {print $1}')
	rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
	p99=$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")
	awk -v r="$rps" -v p="$p99" -v d="$((t1 - t0))" -v n="$reqs" -v tck="$TCK" \
		'BEGIN {printf "%s %s %.2f\n", r, p, (n > 0 ? d / tck * 1e6 / n : 0)}'
}

# ---- interleaved rounds -----------------------------------------------------
declare -A RUNS
measure_set() { # set round script suffix
	local peers=(${SET_PEERS[$1]}) n i peer
	n=${#peers[@]}
	for ((i = 0; i < n; i++)); do
		peer=${peers[$(((i + $2) % n))]}
		[ -n "${SKIP[$peer]:-}" ] && continue
		RUNS[$peer$4]+="$(run_one "$peer" "$3")"$'\n'
	done
}
for s in $SETS; do # warm-up (not counted): connections, pools, caches
	for peer in ${SET_PEERS[$s]}; do
		[ -n "${SKIP[$peer]:-}" ] || wrk -t1 -c"$CONNS" -d1s -s "$work/keys.lua" "${URL[$peer]}" >/dev/null 2>&1 || true
	done
done
for ((r = 0; r < ROUNDS; r++)); do
	for s in $SETS; do
		measure_set "$s" "$r" keys.lua ""
		[ "$s" = tls ] && measure_set "$s" "$r" close.lua ":new"
	done
done
# the median (by req/s) of a peer's runs: "rps p99 cpu_us"
median() { # key
	printf '%s' "${RUNS[$1]:-}" | sed '/^$/d' | sort -n -k1,1 |
		awk '{a[NR]=$0} END {if (NR) print a[int((NR+1)/2)]; else print "nan nan nan"}'
}

# ---- syscalls per request (strace -c; a short separate run) --------------------
syscalls_per_req() { # peer
	local log=$work/strace-$1.txt reqs sp
	strace -c -f -q -p "${PID[$1]}" -o "$log" &
	sp=$!
	sleep 0.5
	reqs=$(wrk -t1 -c"$CONNS" -d2s -s "$work/keys.lua" "${URL[$1]}" | awk '/requests in/ {print $1}')
	kill -INT $sp
	wait $sp 2>/dev/null || true
	awk -v r="$reqs" '$NF=="total" {printf "%.2f", $4/r}' "$log"
}
declare -A SC
if [[ " $SETS " == *" demo "* ]]; then
	for peer in canaryd nginx haproxy; do SC[$peer]=$(syscalls_per_req $peer); done
fi

# ---- RSS with IDLE_CONNS idle keep-alive clients -----------------------------------
idle_rss() { # peer -> "rss_before_kib rss_idle_kib open"
	python3 - "${URL[$1]}" "$IDLE_CONNS" "${PID[$1]}" <<'PY'
import socket, sys, time
url, n, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
port = int(url.split(":")[2].split("/")[0])
def rss():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
before = rss()
req = b"GET /idle HTTP/1.1\r\nHost: bench\r\nx-user-id: idle\r\n\r\n"
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(req)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit(f"connection {i} closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        body += s.recv(65536)
    socks.append(s)
time.sleep(1.0)  # every connection idle, its request long answered
idle = rss()
alive = 0
for s in socks:  # still open on the proxy's side: nothing to read, no EOF
    s.setblocking(False)
    try:
        alive += s.recv(1) != b""
    except BlockingIOError:
        alive += 1
print(before, idle, alive)
PY
}
RSS=""
if [[ " $SETS " == *" demo "* ]]; then
	RSS=$(idle_rss canaryd) || RSS="nan nan 0"
fi

# ---- tables -------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "nan" || b == "nan" || b == 0) print "-"; else printf "%.2f", a / b}'; }
table() { # set title suffix haproxy_peer nginx_peer
	local peer rps p99 cpu h_rps h_p99 h_cpu n_rps n_p99 n_cpu
	read -r h_rps h_p99 h_cpu <<<"$(median "$4$3")"
	read -r n_rps n_p99 n_cpu <<<"$(median "$5$3")"
	echo
	echo "$2"
	printf '%-22s %10s %9s %12s %11s %10s %9s %9s %12s\n' peer req/s p99_ms cpu_us/req rps/haproxy rps/nginx \
		cpu/hapr cpu/nginx syscalls/req
	for peer in ${SET_PEERS[$1]}; do
		if [ -n "${SKIP[$peer]:-}" ]; then
			printf '%-22s %s\n' "$peer" "skipped: ${SKIP[$peer]}"
			continue
		fi
		read -r rps p99 cpu <<<"$(median "$peer$3")"
		printf '%-22s %10.0f %9s %12s %11s %10s %9s %9s %12s\n' "$peer" "$rps" "$p99" "$cpu" \
			"$(ratio "$rps" "$h_rps")" "$(ratio "$rps" "$n_rps")" \
			"$(ratio "$cpu" "$h_cpu")" "$(ratio "$cpu" "$n_cpu")" "${SC[$peer]:--}"
	done
}
# canaryd runs with its default `io:` (auto); its log names the path auto chose
io_path=$(cat "$work"/canaryd*.log 2>/dev/null | grep -o '"msg":"proxy I/O path","io":"[a-z]*"' |
	head -1 | sed 's/.*"io":"//; s/"$//')
head="interleaved over $ROUNDS rounds, median; 90/10 sticky split, 1 worker, wrk -t1 -c$CONNS -d${DURATION}s; canaryd I/O path: ${io_path:-unknown} (io: auto)"
for s in $SETS; do
	case $s in
	demo) table demo "Upstreams: demo-upstream ($head)" "" haproxy nginx ;;
	nginx) table nginx "Upstreams: nginx ($head)" "" haproxy-n nginx-n ;;
	tls)
		table tls "TLS, keep-alive req/s (same RSA-2048 certificate; $head)" "" haproxy-tls nginx-tls
		table tls "TLS, new connections/s (Connection: close: a handshake per request, resumed with the ticket of the previous connection as wrk does; $head)" ":new" haproxy-tls nginx-tls ;;
	mirror) table mirror "Mirror, 100% to a third upstream ($head; ratios vs nginx's mirror)" "" nginx-mirror nginx-mirror ;;
	esac
done
echo "CPU: utime+stime of the proxy process (all threads) from /proc/PID/stat over each run / its requests."
echo "syscalls/req: strace -c -f -p PROXY during a separate 2 s wrk run (strace slows the run; the count per request holds)."

if [[ " $SETS " == *" demo "* ]]; then
	read -r c_rps c_p99 c_cpu <<<"$(median canaryd)"
	read -r n_rps n_p99 n_cpu <<<"$(median nginx)"
	read -r h_rps h_p99 h_cpu <<<"$(median haproxy)"
	read -r rss0 rss1 alive <<<"$RSS"
	echo
	echo "canaryd RSS: $((rss0 / 1024)) MiB idle, $((rss1 / 1024)) MiB with $alive idle keep-alive clients (of $IDLE_CONNS opened)"
	echo
	echo "SPEC 10 targets (demo-upstream set): >= 1.2x HAProxy req/s, <= 0.8x its CPU/req, p99 <= both, <= 4.5 syscalls/req, RSS < 128 MiB at 10,000 idle"
	awk -v c="$c_rps" -v h="$h_rps" -v n="$n_rps" -v cc="$c_cpu" -v hc="$h_cpu" -v cp="$c_p99" -v np="$n_p99" \
		-v hp="$h_p99" -v s="${SC[canaryd]:-nan}" -v rss="$rss1" -v idle="$alive" -v want="$IDLE_CONNS" 'BEGIN {
		if (c == "nan" || h == "nan" || n == "nan") { print "  (a peer is missing: no verdict)"; exit }
		printf "  req/s %.2fx HAProxy (%s), %.2fx nginx  CPU/req %.2fx HAProxy (%s)  p99 %s ms vs %s / %s (%s)\n",
			c/h, (c/h >= 1.2 ? "met" : "NOT met"), c/n, cc/hc, (cc/hc <= 0.8 ? "met" : "NOT met"),
			cp, np, hp, (cp <= np && cp <= hp ? "met" : "NOT met")
		printf "  syscalls/req %s (%s)  RSS %.0f MiB at %d idle (%s)\n", s, (s != "nan" && s <= 4.5 ? "met" : "NOT met"),
			rss / 1024, idle, (idle >= 10000 && rss / 1024 < 128 ? "met" : (idle < 10000 ? "not measured at 10,000" : "NOT met")) }'
fi
if [[ " $SETS " == *" mirror "* ]] && [[ " $SETS " == *" demo "* ]]; then
	read -r c_rps c_p99 _ <<<"$(median canaryd)"
	read -r n_rps _ _ <<<"$(median nginx)"
	read -r m_rps m_p99 _ <<<"$(median canaryd-mirror)"
	read -r nm_rps _ _ <<<"$(median nginx-mirror)"
	read -r ms_rps ms_p99 _ <<<"$(median canaryd-mirror-slow)"
	echo
	echo "SPEC 10 target: 100% mirror >= 0.6x the no-mirror req/s; a shadow 200 ms slower moves primary p99 by < 10%"
	awk -v c="$c_rps" -v m="$m_rps" -v n="$n_rps" -v nm="$nm_rps" -v mp="$m_p99" -v sp="$ms_p99" 'BEGIN {
		printf "  canaryd mirror %.2fx its split (%s)  nginx mirror %.2fx its split  canaryd mirror / nginx mirror %.2fx\n",
			m/c, (m/c >= 0.6 ? "met" : "NOT met"), nm/n, m/nm
		printf "  p99 with a 200 ms slower shadow %s ms vs %s ms with a fast one (%+.0f%%, %s)\n",
			sp, mp, (sp/mp - 1) * 100, (sp/mp - 1 < 0.10 ? "met" : "NOT met") }'
fi
