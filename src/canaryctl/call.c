/*
 * call.c - canaryctl's plumbing below the verbs: the HTTP call to the admin
 * API, JSON output and usage errors (ctl.h).  main.c and every verb file
 * call down into it and it calls none of them, so the files' call graph has
 * no cycle (scripts/check-cycles).
 */
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "canaryctl/ctl.h"
#include "config/config.h"
#include "core/buf.h"

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;

	if (buf_append(b, p, size * n))
		return 0;
	return size * n;
}

int ctl_call_ex(const struct ctl *ctl, const char *method, const char *path, json_t *body,
                long timeout_ms, unsigned flags, long *status_out, json_t **out)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	struct buf resp, url, auth;
	char *payload = NULL;
	long status = 0;
	int rc = CTL_FAILED;
	CURLcode cc;
	json_t *doc = NULL;
	json_error_t jerr;

	*out = NULL;
	buf_init(&resp, 64u << 20);
	buf_init(&url, 8192);
	buf_init(&auth, 8192);
	if (!c)
		goto out;
	buf_printf(&url, "%s%s", ctl->server, path);
	curl_easy_setopt(c, CURLOPT_URL, buf_cstr(&url));
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 30000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (ctl->cacert)
		curl_easy_setopt(c, CURLOPT_CAINFO, ctl->cacert);
	if (ctl->token) {
		buf_printf(&auth, "Authorization: Bearer %s", ctl->token);
		hdrs = curl_slist_append(hdrs, buf_cstr(&auth));
	}
	if (body) {
		payload = json_dumps(body, JSON_COMPACT);
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload ? payload : "{}");
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	cc = curl_easy_perform(c);
	if (cc != CURLE_OK) {
		if (!(flags & CTL_QUIET_TRANSIENT)) {
			char shown[1024]; /* --server may carry user:password@ */

			config_url_redact(buf_cstr(&url), shown, sizeof(shown));
			fprintf(stderr, "canaryctl: %s: %s\n", shown, curl_easy_strerror(cc));
		}
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (buf_used(&resp)) {
		doc = json_loadb(buf_head(&resp), buf_used(&resp), 0, &jerr);
		if (!doc && status / 100 == 2) {
			fprintf(stderr, "canaryctl: invalid JSON from server: %s\n", jerr.text);
			goto out;
		}
	}
	if (status / 100 != 2) {
		json_t *e = json_object_get(json_object_get(doc, "error"), "message");
		json_t *f = json_object_get(json_object_get(doc, "error"), "field");

		if (!(status / 100 == 5 && (flags & CTL_QUIET_TRANSIENT)) &&
		    !(status == 404 && (flags & CTL_QUIET_NOTFOUND)))
			fprintf(stderr, "canaryctl: %s %s: %ld %s%s%s%s\n", method, path, status,
			        json_is_string(e) ? json_string_value(e) : "(no message)",
			        json_is_string(f) ? " (field " : "",
			        json_is_string(f) ? json_string_value(f) : "",
			        json_is_string(f) ? ")" : "");
		json_decref(doc);
		goto out;
	}
	*out = doc;
	rc = CTL_OK;
out:
	if (status_out)
		*status_out = status;
	free(payload);
	curl_slist_free_all(hdrs);
	if (c)
		curl_easy_cleanup(c);
	buf_release(&resp);
	buf_release(&url);
	buf_release(&auth);
	return rc;
}

int ctl_call(const struct ctl *ctl, const char *method, const char *path, json_t *body,
             json_t **out)
{
	return ctl_call_ex(ctl, method, path, body, 0, 0, NULL, out);
}

void ctl_print_json(json_t *doc)
{
	char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	if (s) {
		puts(s);
		free(s);
	}
}

int ctl_usage_error(const char *usage, const char *fmt, ...)
{
	va_list ap;

	fputs("canaryctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: canaryctl %s\n", usage);
	return CTL_USAGE;
}

int ctl_usage_arg(const char *usage, const char *why, const char *arg)
{
	return ctl_usage_error(usage, "%s%s%s%s", why, arg ? " \"" : "", arg ? arg : "",
	                       arg ? "\"" : "");
}
