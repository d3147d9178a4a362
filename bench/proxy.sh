#!/bin/bash
# Proxy benchmark (SPEC 10): canaryd vs nginx vs HAProxy on the same loopback
# upstreams, one worker each, 90/10 sticky split, wrk -t1 -c50, median of 3.
# Mirror rows: the same split plus 100% of requests mirrored to a third
# upstream (canaryd's mirror: vs nginx's `mirror` directive), and canaryd with
# a shadow 200 ms slower (its primary p99 must not move by 10% or more).
#   bench/proxy.sh [BUILD_DIR]     env: DURATION (s, default 5), RUNS (default 3)
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
root=$PWD
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
work=$(mktemp -d /tmp/canaryd-bench.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

for t in wrk nginx haproxy strace; do
	command -v $t >/dev/null || { echo "bench: $t missing (scripts/install-deps --bench)"; exit 1; }
done

UP1=17101 UP2=17102 CAN=18101 NGX=18102 HAP=18103 CAN2=18104 ADMIN=19101 ADMIN2=19102
UP3=17103 UP4=17104 CANM=18105 CANMS=18106 NGXM=18107 ADMINM=19103 ADMINMS=19104
"$build/demo-upstream" --listen 127.0.0.1:$UP1 --name v1 2>/dev/null & pids+=($!)
"$build/demo-upstream" --listen 127.0.0.1:$UP2 --name v2 2>/dev/null & pids+=($!)
"$build/demo-upstream" --listen 127.0.0.1:$UP3 --name v3 2>/dev/null & pids+=($!)
"$build/demo-upstream" --listen 127.0.0.1:$UP4 --name v3 --latency-ms 200 2>/dev/null & pids+=($!)

canaryd_conf() { # port admin workers [shadow_port]
	local shadow=${4:-}
	cat <<CONF
admin:
  listen: 127.0.0.1:$2
  tokens: [{name: bench, secret: bench-token, scopes: [admin]}]
store: sqlite:$work/canaryd-$1.db
workers: $3
listeners:
  - name: public
    listen: 127.0.0.1:$1
    routes: [{match: {path_prefix: /}, service: web}]
services:
  web:
    versions:
      v1: {endpoints: [127.0.0.1:$UP1]}
      v2: {endpoints: [127.0.0.1:$UP2]}
$([ -n "$shadow" ] && echo "      v3: {endpoints: [127.0.0.1:$shadow]}")
    stable: v1
    sticky: header:x-user-id
$([ -n "$shadow" ] && echo "    mirror: {version: v3, percent: 100}")
CONF
}
start_canaryd() { # port admin workers [shadow_port]
	canaryd_conf "$1" "$2" "$3" "${4:-}" >"$work/canaryd-$1.yaml"
	"$build/canaryd" -c "$work/canaryd-$1.yaml" 2>"$work/canaryd-$1.log" &
	pids+=($!)
	for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$2/v1/health" && break; sleep 0.05; done
	curl -sf -o /dev/null -X PUT -H 'Authorization: Bearer bench-token' \
		-d '{"canary":"v2","weight":10}' "http://127.0.0.1:$2/v1/services/web/traffic"
}
start_canaryd $CAN $ADMIN 1
CANPID=${pids[-1]}
start_canaryd $CAN2 $ADMIN2 2
start_canaryd $CANM $ADMINM 1 $UP3
start_canaryd $CANMS $ADMINMS 1 $UP4

cat >"$work/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream v1 { server 127.0.0.1:$UP1; keepalive 64; }
  upstream v2 { server 127.0.0.1:$UP2; keepalive 64; }
  split_clients "\$http_x_user_id" \$pool { 10% v2; * v1; }
  server {
    listen 127.0.0.1:$NGX reuseport;
    location / {
      proxy_pass http://\$pool;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" 2>/dev/null & pids+=($!)
NGXPID=${pids[-1]}
# the same split, every request mirrored to v3 with nginx's mirror module
sed -e "s/$NGX reuseport/$NGXM reuseport/" -e "s|$work/nginx.pid|$work/nginx-m.pid|" \
	-e "s|upstream v2 {|upstream v3 { server 127.0.0.1:$UP3; keepalive 64; }\n  upstream v2 {|" \
	-e "s|    location / {|    location = /_mirror { internal; proxy_pass http://v3\$request_uri; proxy_http_version 1.1; proxy_set_header Connection \"\"; }\n    location / {\n      mirror /_mirror;|" \
	"$work/nginx.conf" >"$work/nginx-m.conf"
nginx -c "$work/nginx-m.conf" -e "$work/nginx-error.log" 2>/dev/null & pids+=($!)

cat >"$work/haproxy.cfg" <<CONF
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
  bind 127.0.0.1:$HAP
  default_backend be
backend be
  balance hdr(x-user-id)
  hash-type consistent
  server v1 127.0.0.1:$UP1 weight 90
  server v2 127.0.0.1:$UP2 weight 10
CONF
haproxy -f "$work/haproxy.cfg" -db 2>/dev/null & pids+=($!)
HAPPID=${pids[-1]}
sleep 0.5

cat >"$work/keys.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/bench", {["x-user-id"] = "user-" .. (n % 100000)})
end
LUA

# prints "rps p50_ms p99_ms"
measure() { # url
	local out
	out=$(wrk -t1 -c50 -d"${DURATION}s" --latency -s "$work/keys.lua" "$1" 2>&1)
	if echo "$out" | grep -q "Non-2xx\|Socket errors"; then
		echo "bench: errors against $1:" >&2
		echo "$out" | grep -E "Non-2xx|Socket" >&2
	fi
	local rps p50 p99
	rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
	p50=$(echo "$out" | awk '$1=="50%" {print $2}')
	p99=$(echo "$out" | awk '$1=="99%" {print $2}')
	echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}
to_ms() { # wrk latency "1.23ms" / "800.00us" / "1.02s"
	case "$1" in
	*us) echo "$1" | sed 's/us//' | awk '{printf "%.3f", $1/1000}' ;;
	*ms) echo "$1" | sed 's/ms//' | awk '{printf "%.3f", $1}' ;;
	*s) echo "$1" | sed 's/s//' | awk '{printf "%.3f", $1*1000}' ;;
	*) echo "nan" ;;
	esac
}
median3() { # reads lines "rps p50 p99", prints the line with the median rps
	sort -n -k1,1 | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'
}

declare -A RES
for target in "direct:http://127.0.0.1:$UP1/bench" "canaryd:http://127.0.0.1:$CAN/bench" \
	"nginx:http://127.0.0.1:$NGX/bench" "haproxy:http://127.0.0.1:$HAP/bench" \
	"canaryd-2w:http://127.0.0.1:$CAN2/bench" "canaryd-mirror:http://127.0.0.1:$CANM/bench" \
	"nginx-mirror:http://127.0.0.1:$NGXM/bench" \
	"canaryd-mirror-slow:http://127.0.0.1:$CANMS/bench"; do
	name=${target%%:*}
	url=${target#*:}
	measure "$url" >/dev/null # warm-up
	runs=""
	for _ in $(seq "$RUNS"); do runs+="$(measure "$url")"$'\n'; done
	RES[$name]=$(printf '%s' "$runs" | median3)
done

# syscalls per request: strace -c -f on the proxy during a short fixed run
syscalls_per_req() { # pid url
	local log=$work/strace-$1.txt reqs
	strace -c -f -q -p "$1" -o "$log" &
	local sp=$!
	sleep 0.5
	reqs=$(wrk -t1 -c50 -d2s -s "$work/keys.lua" "$2" | awk '/requests in/ {print $1}')
	kill -INT $sp
	wait $sp 2>/dev/null || true
	awk -v r="$reqs" '$NF=="total" {printf "%.2f", $4/r}' "$log"
}
SC_CAN=$(syscalls_per_req $CANPID "http://127.0.0.1:$CAN/bench")
SC_NGX=$(syscalls_per_req $NGXPID "http://127.0.0.1:$NGX/bench")
SC_HAP=$(syscalls_per_req $HAPPID "http://127.0.0.1:$HAP/bench")

read -r d_rps _ _ <<<"${RES[direct]}"
read -r n_rps n_p50 n_p99 <<<"${RES[nginx]}"
read -r h_rps h_p50 h_p99 <<<"${RES[haproxy]}"
echo
echo "Proxy benchmark: 90/10 sticky split, 1 worker, wrk -t1 -c50 -d${DURATION}s, median of $RUNS"
printf '%-20s %10s %9s %9s %9s %9s %9s %10s\n' target req/s p50_ms p99_ms vs_direct vs_nginx vs_haproxy syscalls/req
for name in direct canaryd nginx haproxy canaryd-2w canaryd-mirror nginx-mirror canaryd-mirror-slow; do
	read -r rps p50 p99 <<<"${RES[$name]}"
	sc=""
	case $name in canaryd) sc=$SC_CAN ;; nginx) sc=$SC_NGX ;; haproxy) sc=$SC_HAP ;; esac
	printf '%-20s %10.0f %9s %9s %9.2f %9.2f %10.2f %10s\n' "$name" "$rps" "$p50" "$p99" \
		"$(echo "$rps $d_rps" | awk '{print $1/$2}')" \
		"$(echo "$rps $n_rps" | awk '{print $1/$2}')" \
		"$(echo "$rps $h_rps" | awk '{print $1/$2}')" "$sc"
done
read -r c_rps c_p50 c_p99 <<<"${RES[canaryd]}"
echo
echo "SPEC 10 target: canaryd >= 1.2x HAProxy and >= 1.0x nginx req/s, p99 <= both, <= 4.5 syscalls/req"
awk -v c="$c_rps" -v n="$n_rps" -v h="$h_rps" -v cp="$c_p99" -v np="$n_p99" -v hp="$h_p99" -v s="$SC_CAN" 'BEGIN {
	printf "  vs HAProxy %.2fx (%s)  vs nginx %.2fx (%s)  p99 %s ms vs %s / %s (%s)  syscalls %s (%s)\n",
		c/h, (c/h >= 1.2 ? "met" : "NOT met"), c/n, (c/n >= 1.0 ? "met" : "NOT met"),
		cp, np, hp, (cp <= np && cp <= hp ? "met" : "NOT met"), s, (s <= 4.5 ? "met" : "NOT met") }'
read -r m_rps m_p50 m_p99 <<<"${RES[canaryd-mirror]}"
read -r nm_rps nm_p50 nm_p99 <<<"${RES[nginx-mirror]}"
read -r ms_rps ms_p50 ms_p99 <<<"${RES[canaryd-mirror-slow]}"
echo
echo "SPEC 10 target: 100% mirror >= 0.6x the no-mirror req/s; a shadow 200 ms slower moves primary p99 by < 10%"
awk -v c="$c_rps" -v m="$m_rps" -v n="$n_rps" -v nm="$nm_rps" -v cp="$c_p99" -v mp="$m_p99" -v sp="$ms_p99" 'BEGIN {
	printf "  canaryd mirror %.2fx its split (%s)  nginx mirror %.2fx its split  canaryd mirror / nginx mirror %.2fx\n",
		m/c, (m/c >= 0.6 ? "met" : "NOT met"), nm/n, m/nm
	printf "  p99 with a 200 ms slower shadow %s ms vs %s ms with a fast one (%+.0f%%, %s)\n",
		sp, mp, (sp/mp - 1) * 100, (sp/mp - 1 < 0.10 ? "met" : "NOT met") }'
curl -sf -H 'Authorization: Bearer bench-token' "http://127.0.0.1:$ADMINMS/v1/services/web/shadow" |
	python3 -c 'import json,sys; c=json.load(sys.stdin)["counts"]; print("  slow shadow: mirrored %d, dropped %d (bounded queue)" % (c["mirrored"], c["dropped"]))' || true
