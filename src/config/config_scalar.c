/*
 * config_scalar.c - validators of single values: durations, percentages,
 * addresses, sizes, times, names.  Shared by the YAML loader and the API.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "config/config.h"

static const char *const metric_names[] = {
    [CONFIG_METRIC_REQUEST_RATE] = "request_rate",
    [CONFIG_METRIC_ERROR_RATE] = "error_rate",
    [CONFIG_METRIC_SUCCESS_RATE] = "success_rate",
    [CONFIG_METRIC_LATENCY_P50] = "latency_p50",
    [CONFIG_METRIC_LATENCY_P90] = "latency_p90",
    [CONFIG_METRIC_LATENCY_P95] = "latency_p95",
    [CONFIG_METRIC_LATENCY_P99] = "latency_p99",
    [CONFIG_METRIC_LATENCY_MEAN] = "latency_mean",
    [CONFIG_METRIC_SHADOW_MISMATCH_RATE] = "shadow_mismatch_rate",
    [CONFIG_METRIC_SHADOW_ERROR_RATE] = "shadow_error_rate",
    [CONFIG_METRIC_SHADOW_LATENCY_P99] = "shadow_latency_p99",
};

const char *config_metric_name(enum config_metric m)
{
	if ((size_t)m >= sizeof(metric_names) / sizeof(metric_names[0]))
		return NULL;
	return metric_names[m];
}

/* Reads up to 19 decimal digits; returns the count read (0 = none or overflow). */
static size_t read_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	while (isdigit((unsigned char)s[i])) {
		unsigned d = (unsigned)(s[i] - '0');

		if (v > (UINT64_MAX - d) / 10)
			return 0;
		v = v * 10 + d;
		i++;
	}
	*out = v;
	return i;
}

int config_parse_duration(const char *s, uint64_t *ms)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = {
	    {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
	};
	uint64_t total = 0;

	if (!s || !*s)
		return -1;
	if (strcmp(s, "0") == 0) {
		*ms = 0;
		return 0;
	}
	while (*s) {
		uint64_t v, mul = 0;
		size_t n = read_u64(s, &v), ulen = 0;

		if (n == 0)
			return -1;
		s += n;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			size_t l = strlen(units[i].unit);

			/* "ms" before "m": the longer unit must match first. */
			if (strncmp(s, units[i].unit, l) == 0 && l > ulen) {
				ulen = l;
				mul = units[i].ms;
			}
		}
		if (!ulen)
			return -1;
		s += ulen;
		if (v > UINT64_MAX / mul || total > UINT64_MAX - v * mul)
			return -1;
		total += v * mul;
	}
	*ms = total;
	return 0;
}

int config_parse_percent(const char *s, uint32_t *thousandths)
{
	uint64_t ip = 0, frac = 0;
	size_t n, fd = 0;

	if (!s)
		return -1;
	n = read_u64(s, &ip);
	if (n == 0 || n > 3)
		return -1;
	s += n;
	if (*s == '.') {
		s++;
		while (isdigit((unsigned char)*s)) {
			if (fd == 3)
				return -1;
			frac = frac * 10 + (uint64_t)(*s - '0');
			fd++;
			s++;
		}
		if (fd == 0)
			return -1;
	}
	for (; fd < 3; fd++)
		frac *= 10;
	if (*s == '%')
		s++;
	if (*s)
		return -1;
	if (ip * 1000 + frac > 100000)
		return -1;
	*thousandths = (uint32_t)(ip * 1000 + frac);
	return 0;
}

int config_percent_from_double(double v, uint32_t *thousandths)
{
	double t, r;

	if (!isfinite(v) || v < 0 || v > 100)
		return -1;
	t = v * 1000.0;
	r = nearbyint(t);
	/*
	 * Exact round trip: v must be the double nearest to r/1000, so 0.0005,
	 * 1e-10 or a subnormal never pass as 0 (an underflow to exactly 0 is
	 * caught on the JSON text, see api_body_json).
	 */
	if (r / 1000.0 != v || (v != 0 && fpclassify(v) != FP_NORMAL))
		return -1;
	*thousandths = (uint32_t)r;
	return 0;
}

static bool valid_hostname(const char *h, size_t len)
{
	size_t label = 0;

	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)h[i];

		if (ch == '.') {
			if (label == 0 || h[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!isalnum(ch) && ch != '-' && ch != '_')
			return false;
		if (label == 0 && ch == '-')
			return false;
		if (++label > 63)
			return false;
	}
	return h[len - 1] != '-';
}

int config_parse_addr(const char *s, struct config_addr *out, const char **why)
{
	const char *colon, *host;
	size_t hlen;
	uint64_t port;
	int family;
	unsigned char tmp[16];
	const char *dummy;

	if (!why)
		why = &dummy;
	*why = "expected host:port";
	if (!s || !*s)
		return -1;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -1;
		host = s + 1;
		hlen = (size_t)(close - host);
		colon = close + 1;
		family = AF_INET6;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -1;
		host = s;
		hlen = (size_t)(colon - s);
		if (memchr(host, ':', hlen)) {
			*why = "IPv6 addresses must be written in brackets: [::1]:port";
			return -1;
		}
		family = AF_UNSPEC;
		if (hlen && strspn(host, "0123456789.") >= hlen)
			family = AF_INET;
	}
	if (hlen == 0) {
		*why = "missing host before the port";
		return -1;
	}
	if (hlen >= sizeof(out->host)) {
		*why = "host name too long";
		return -1;
	}
	if (read_u64(colon + 1, &port) != strlen(colon + 1) || colon[1] == '\0' || port == 0 ||
	    port > 65535) {
		*why = "port must be between 1 and 65535";
		return -1;
	}
	memcpy(out->host, host, hlen);
	out->host[hlen] = '\0';
	if (family == AF_INET6 && inet_pton(AF_INET6, out->host, tmp) != 1) {
		*why = "invalid IPv6 address";
		return -1;
	}
	if (family == AF_INET && inet_pton(AF_INET, out->host, tmp) != 1) {
		*why = "invalid IPv4 address";
		return -1;
	}
	if (family == AF_UNSPEC && !valid_hostname(out->host, hlen)) {
		*why = "invalid host name";
		return -1;
	}
	out->port = (uint16_t)port;
	out->family = family;
	return 0;
}

int config_addr_format(const struct config_addr *a, char *buf, size_t n)
{
	if (a->family == AF_INET6)
		return snprintf(buf, n, "[%s]:%u", a->host, (unsigned)a->port);
	return snprintf(buf, n, "%s:%u", a->host, (unsigned)a->port);
}

bool config_valid_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 64 || s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (!isalnum(ch) && ch != '_' && ch != '.' && ch != '-')
			return false;
	}
	return true;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
	static const struct {
		const char *suffix;
		unsigned shift;
	} sfx[] = {
	    {"", 0},    {"b", 0},    {"k", 10}, {"kb", 10}, {"kib", 10}, {"m", 20},
	    {"mb", 20}, {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30},
	};
	uint64_t v;
	size_t n;

	if (!s)
		return -1;
	n = read_u64(s, &v);
	if (n == 0)
		return -1;
	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		if (strcasecmp(s + n, sfx[i].suffix) == 0) {
			if (v > (UINT64_MAX >> sfx[i].shift))
				return -1;
			*bytes = v << sfx[i].shift;
			return 0;
		}
	}
	return -1;
}

/* Reads exactly n digits. */
static bool digits(const char **s, size_t n, unsigned *out)
{
	unsigned v = 0;

	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*s)[i]))
			return false;
		v = v * 10 + (unsigned)((*s)[i] - '0');
	}
	*s += n;
	*out = v;
	return true;
}

static bool expect(const char **s, char ch)
{
	if (**s != ch)
		return false;
	(*s)++;
	return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static unsigned days_in_month(unsigned y, unsigned m)
{
	static const unsigned dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return m == 2 && leap ? 29 : dm[m - 1];
}

int config_parse_rfc3339_ms(const char *s, int64_t *epoch_ms)
{
	unsigned y, mo, d, h, mi, sec, oh = 0, om = 0, ms = 0, scale = 100;
	int sign = 0;

	if (!s)
		return -1;
	if (!digits(&s, 4, &y) || !expect(&s, '-') || !digits(&s, 2, &mo) || !expect(&s, '-') ||
	    !digits(&s, 2, &d))
		return -1;
	if (*s != 'T' && *s != 't' && *s != ' ')
		return -1;
	s++;
	if (!digits(&s, 2, &h) || !expect(&s, ':') || !digits(&s, 2, &mi) || !expect(&s, ':') ||
	    !digits(&s, 2, &sec))
		return -1;
	if (*s == '.') {
		s++;
		if (!isdigit((unsigned char)*s))
			return -1;
		for (; isdigit((unsigned char)*s); s++, scale /= 10)
			ms += (unsigned)(*s - '0') * scale; /* past the third digit scale is 0 */
	}
	if (*s == 'Z' || *s == 'z') {
		s++;
	} else if (*s == '+' || *s == '-') {
		sign = *s == '+' ? 1 : -1;
		s++;
		if (!digits(&s, 2, &oh) || !expect(&s, ':') || !digits(&s, 2, &om))
			return -1;
	} else {
		return -1;
	}
	if (*s || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 ||
	    sec > 60 || oh > 23 || om > 59)
		return -1;
	*epoch_ms = (days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec -
	             sign * (int64_t)(oh * 3600 + om * 60)) *
	                1000 +
	            ms;
	return 0;
}

int config_parse_rfc3339(const char *s, int64_t *epoch_s)
{
	int64_t ms;

	if (config_parse_rfc3339_ms(s, &ms) != 0)
		return -1;
	/* the fraction only adds: flooring drops it, also before 1970 */
	*epoch_s = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
	return 0;
}

static bool parse_hhmm(const char **s, uint32_t *minute)
{
	unsigned h, m;

	if (!digits(s, 2, &h) || !expect(s, ':') || !digits(s, 2, &m) || h > 23 || m > 59)
		return false;
	*minute = h * 60 + m;
	return true;
}

int config_parse_time_of_day(const char *s, uint32_t *minute_of_day)
{
	if (!s || !parse_hhmm(&s, minute_of_day) || !expect(&s, 'Z') || *s)
		return -1;
	return 0;
}

static int day_index(const char *s)
{
	static const char *const days[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};

	for (int i = 0; i < 7; i++)
		if (strncasecmp(s, days[i], 3) == 0)
			return i;
	return -1;
}

int config_parse_window(const char *s, struct config_window *w)
{
	struct config_window r = {.set = true, .days = 0x7f};
	uint32_t a, b;
	const char *sp;

	if (!s)
		return -1;
	sp = strchr(s, ' ');
	if (sp) {
		r.days = 0;
		while (s < sp) {
			int d0 = day_index(s), d1;

			if (d0 < 0)
				return -1;
			s += 3;
			d1 = d0;
			if (*s == '-') {
				d1 = day_index(s + 1);
				if (d1 < 0)
					return -1;
				s += 4;
			}
			for (int d = d0;; d = (d + 1) % 7) {
				r.days |= (uint8_t)(1u << d);
				if (d == d1)
					break;
			}
			if (*s == ',')
				s++;
			else if (s != sp)
				return -1;
		}
		while (*s == ' ')
			s++;
	}
	if (!parse_hhmm(&s, &a) || !expect(&s, '-') || !parse_hhmm(&s, &b) || !expect(&s, 'Z') ||
	    *s || a == b)
		return -1;
	r.start_min = (uint16_t)a;
	r.end_min = (uint16_t)b;
	*w = r;
	return 0;
}

static bool semver_num(const char **s)
{
	const char *p = *s;

	if (!isdigit((unsigned char)*p))
		return false;
	if (*p == '0' && isdigit((unsigned char)p[1]))
		return false;
	while (isdigit((unsigned char)*p))
		p++;
	*s = p;
	return true;
}

static bool semver_ident(const char **s)
{
	const char *p = *s;

	while (isalnum((unsigned char)*p) || *p == '-' || *p == '.')
		p++;
	if (p == *s || p[-1] == '.')
		return false;
	*s = p;
	return true;
}

bool config_valid_semver(const char *s)
{
	if (!s)
		return false;
	if (*s == 'v')
		s++;
	if (!semver_num(&s) || !expect(&s, '.') || !semver_num(&s) || !expect(&s, '.') ||
	    !semver_num(&s))
		return false;
	if (*s == '-' && (s++, !semver_ident(&s)))
		return false;
	if (*s == '+' && (s++, !semver_ident(&s)))
		return false;
	return *s == '\0';
}

bool config_valid_url(const char *s)
{
	size_t hl;

	if (!s)
		return false;
	if (strncmp(s, "http://", 7) == 0)
		s += 7;
	else if (strncmp(s, "https://", 8) == 0)
		s += 8;
	else
		return false;
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return false;
	hl = strcspn(s, "/?#");
	/* userinfo@host:port -- the host part after any '@' must not be empty */
	for (size_t i = hl; i > 0; i--) {
		if (s[i - 1] == '@') {
			s += i;
			hl -= i;
			break;
		}
	}
	return hl > 0 && s[0] != ':';
}

/* True for query parameter names that carry a secret. */
static bool secret_param(const char *k, size_t len)
{
	static const char *const words[] = {"password", "secret", "token"};

	for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
		size_t wl = strlen(words[w]);

		for (size_t i = 0; i + wl <= len; i++)
			if (strncasecmp(k + i, words[w], wl) == 0)
				return true;
	}
	return false;
}

/* Appends len bytes of s to out[*o..n-1], cutting at the end; keeps out NUL-terminated. */
static void put(char *out, size_t n, size_t *o, const char *s, size_t len)
{
	if (*o + 1 >= n)
		return;
	if (len > n - 1 - *o)
		len = n - 1 - *o;
	memcpy(out + *o, s, len);
	*o += len;
	out[*o] = '\0';
}

bool config_url_redact(const char *url, char *out, size_t n)
{
	static const char hidden[] = "<redacted>";
	const char *sep, *auth, *at = NULL, *p;
	size_t alen, o = 0;
	bool did = false;

	if (n == 0)
		return false;
	out[0] = '\0';
	if (!url)
		return false;
	sep = strstr(url, "://");
	if (!sep || strcspn(url, "/?#@") < (size_t)(sep - url)) {
		put(out, n, &o, url, strlen(url));
		return false;
	}
	auth = sep + 3;
	alen = strcspn(auth, "/?#");
	for (size_t i = alen; i > 0; i--) {
		if (auth[i - 1] == '@') {
			at = auth + i - 1;
			break;
		}
	}
	put(out, n, &o, url, (size_t)(auth - url));
	if (at) {
		const char *colon = memchr(auth, ':', (size_t)(at - auth));

		if (colon)
			put(out, n, &o, auth, (size_t)(colon + 1 - auth));
		put(out, n, &o, hidden, sizeof(hidden) - 1);
		did = true;
		p = at;
	} else {
		p = auth;
	}
	/* the host and path as they are, then the query parameter by parameter */
	alen = strcspn(p, "?#");
	put(out, n, &o, p, alen);
	p += alen;
	if (*p != '?') {
		put(out, n, &o, p, strlen(p));
		return did;
	}
	put(out, n, &o, p, 1);
	p++;
	while (*p && *p != '#') {
		size_t plen = strcspn(p, "&#"), klen = strcspn(p, "=&#");

		if (klen < plen && secret_param(p, klen)) {
			put(out, n, &o, p, klen + 1);
			put(out, n, &o, hidden, sizeof(hidden) - 1);
			did = true;
		} else {
			put(out, n, &o, p, plen);
		}
		p += plen;
		if (*p == '&')
			put(out, n, &o, p++, 1);
	}
	put(out, n, &o, p, strlen(p));
	return did;
}
