/* canaryctl - the command-line client of canaryd (SPEC 8). */
#include <curl/curl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canaryctl/ctl.h"
#include "config/config.h"
#include "core/buf.h"

static const struct ctl_verb verbs[] = {
    {"status", "status", ctl_status},
    {"check-config", "check-config FILE", ctl_check_config},
    {"rollout",
     "rollout list\n  rollout get NAME\n  rollout start|pause|resume|abort|retry NAME\n"
     "  rollout promote NAME [--full]\n  rollout approve NAME",
     ctl_rollout},
    {"rollback", "rollback --all", ctl_rollback},
    {"watch", "watch NAME [--interval-ms 500]", ctl_watch},
    {"evidence", "evidence NAME --out DIR", ctl_evidence},
    {"flags",
     "flags list\n  flags get NAME\n  flags set NAME [--percentage P] [--enabled[=true|false]]\n"
     "  flags exclude NAME --nodes a,b\n  flags kill NAME",
     ctl_flags},
    {"shadow", "shadow SERVICE", ctl_shadow},
    {"faults",
     "faults set SERVICE VERSION [--abort STATUS:PCT] [--delay DURATION:PCT]\n"
     "  faults clear SERVICE VERSION",
     ctl_faults},
};

static void usage(FILE *f)
{
	fputs("usage: canaryctl [--server URL] [--token T] [-o table|json|yaml] VERB ...\n"
	      "\n"
	      "  --server URL   admin API of canaryd (default $CANARYD_SERVER or\n"
	      "                 http://127.0.0.1:9901)\n"
	      "  --token T      bearer token (default $CANARYD_TOKEN)\n"
	      "  -o FORMAT      table (default), json or yaml\n"
	      "\n"
	      "verbs:\n",
	      f);
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		fprintf(f, "  %s\n", verbs[i].usage);
	fputs("\nexit codes: 0 ok, 1 failed, 2 usage\n", f);
}

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

		if (!(status / 100 == 5 && (flags & CTL_QUIET_TRANSIENT)))
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

int ctl_status(const struct ctl *ctl_in, int argc, char **argv)
{
	struct ctl c = *ctl_in, *ctl = &c;
	json_t *doc, *comp, *v;
	const char *k;
	size_t i;
	int rc;

	/* "-o FORMAT" after the verb, as the other verbs take it */
	if (argc == 3 && strcmp(argv[1], "-o") == 0) {
		if (ctl_set_output(ctl, argv[2]) != 0)
			return ctl_usage_arg("status [-o table|json|yaml]",
			                     "-o takes table, json or yaml, not", argv[2]);
	} else if (argc != 1) {
		fputs("usage: canaryctl status [-o table|json|yaml]\n", stderr);
		return CTL_USAGE;
	}
	rc = ctl_call(ctl, "GET", "/v1/health/detailed", NULL, &doc);
	if (rc != CTL_OK)
		return rc;
	if (ctl->json) {
		ctl_print(ctl, doc);
		json_decref(doc);
		return CTL_OK;
	}
	printf("canaryd %s  status %s  config revision %lld  started %s\n",
	       json_string_value(json_object_get(doc, "version")),
	       json_string_value(json_object_get(doc, "status")),
	       (long long)json_integer_value(json_object_get(doc, "config_revision")),
	       json_string_value(json_object_get(doc, "started_at")));
	printf("%-12s %-24s %s\n", "COMPONENT", "NAME", "STATUS");
	comp = json_object_get(doc, "components");
	json_object_foreach(comp, k, v)
	{
		if (json_is_array(v)) {
			json_t *item;

			json_array_foreach(v, i, item)
			{
				json_t *name = json_object_get(item, "name");

				printf("%-12s %-24s %s\n", k, name ? json_string_value(name) : "-",
				       json_string_value(json_object_get(item, "status")));
			}
		} else {
			printf("%-12s %-24s %s\n", k, "-",
			       json_string_value(json_object_get(v, "status")));
		}
	}
	json_decref(doc);
	return CTL_OK;
}

int ctl_check_config(const struct ctl *ctl, int argc, char **argv)
{
	struct config_errors errs;
	struct config *cfg;
	char summary[512];

	if (argc != 2) {
		fputs("usage: canaryctl check-config FILE\n", stderr);
		return CTL_USAGE;
	}
	config_errors_init(&errs);
	cfg = config_load_file(argv[1], &errs);
	if (!cfg || config_errors_count(&errs)) {
		config_errors_print(&errs, stderr);
		config_errors_release(&errs);
		config_free(cfg);
		return CTL_FAILED;
	}
	config_summary(cfg, summary, sizeof(summary));
	puts(summary);
	config_errors_release(&errs);
	config_free(cfg);
	return CTL_OK;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
	    {"server", required_argument, NULL, 's'},
	    {"token", required_argument, NULL, 't'},
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct ctl ctl = {getenv("CANARYD_SERVER"), getenv("CANARYD_TOKEN"), 0, 0};
	int c, rc;

	if (!ctl.server || !*ctl.server)
		ctl.server = "http://127.0.0.1:9901";
	/* "+": stop at the verb so verbs parse their own options */
	while ((c = getopt_long(argc, argv, "+o:h", lopts, NULL)) != -1) {
		switch (c) {
		case 's':
			ctl.server = optarg;
			break;
		case 't':
			ctl.token = optarg;
			break;
		case 'o':
			if (ctl_set_output(&ctl, optarg) != 0) {
				fprintf(stderr,
				        "canaryctl: -o must be table, json or yaml, not \"%s\"\n",
				        optarg);
				usage(stderr);
				return CTL_USAGE;
			}
			break;
		case 'h':
			usage(stdout);
			return CTL_OK;
		default:
			usage(stderr);
			return CTL_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return CTL_USAGE;
	}
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strcmp(argv[optind], verbs[i].name) == 0) {
			curl_global_init(CURL_GLOBAL_DEFAULT);
			optind++;
			/* verbs see argv[0] = their name, like a program of their own */
			rc = verbs[i].run(&ctl, argc - optind + 1, argv + optind - 1);
			curl_global_cleanup();
			return rc;
		}
	}
	fprintf(stderr, "canaryctl: unknown verb \"%s\"\n", argv[optind]);
	usage(stderr);
	return CTL_USAGE;
}
