/* canaryctl - the command-line client of canaryd (SPEC 8). */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canaryctl/ctl.h"
#include "config/config.h"
#include "net/tls.h"

static const struct ctl_verb verbs[] = {
    {"status", "status", ctl_status, 0},
    {"check-config", "check-config FILE", ctl_check_config, 0},
    {"rollout",
     "rollout list\n  rollout get NAME\n  rollout start NAME [--rehearse SPEED]\n"
     "  rollout pause|resume|abort|retry NAME\n"
     "  rollout promote NAME [--full]\n  rollout approve NAME",
     ctl_rollout, 1},
    {"rollback", "rollback --all", ctl_rollback, 1},
    {"watch", "watch NAME [--interval-ms 500]", ctl_watch, 1},
    {"evidence", "evidence NAME --out DIR", ctl_evidence, 1},
    {"flags",
     "flags list\n  flags get NAME\n"
     "  flags set NAME [--percentage P] [--enabled[=true|false]] [--create]\n"
     "  flags exclude NAME --nodes a,b\n  flags kill NAME\n  flags history NAME",
     ctl_flags, 0},
    {"events", "events [--follow] [--subject S] [--kind K] [--since ID] [--interval-ms 1000]",
     ctl_events, 0},
    {"shadow", "shadow SERVICE", ctl_shadow, 0},
    {"faults",
     "faults set SERVICE VERSION [--abort STATUS:PCT] [--delay DURATION:PCT]\n"
     "  faults clear SERVICE VERSION",
     ctl_faults, 0},
    {"fleet", "fleet", ctl_fleet, 0},
    {"export", "export prometheus-rules|grafana-dashboard [--service S]", ctl_export, 0},
    {"completion", "completion bash|zsh", ctl_completion, 0},
};

/* "VERB ... --help" or "-h" anywhere among the verb's arguments. */
static int wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return 0;
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return 1;
	}
	return 0;
}

static void usage(FILE *f)
{
	fputs("usage: canaryctl [--server URL] [--token T] [--cacert FILE] [-o table|json|yaml] "
	      "VERB ...\n"
	      "\n"
	      "  --server URL   admin API of canaryd (default $CANARYD_SERVER or\n"
	      "                 http://127.0.0.1:9901; https://... when admin.tls is set)\n"
	      "  --token T      bearer token (default $CANARYD_TOKEN)\n"
	      "  --cacert FILE  CA certificate(s) that sign the server's certificate\n"
	      "                 (default $CANARYD_CACERT, else the system's trust store)\n"
	      "  -o FORMAT      table (default), json or yaml\n"
	      "  --version      print the version\n"
	      "\n"
	      "verbs:\n",
	      f);
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		fprintf(f, "  %s\n", verbs[i].usage);
	fputs("\nexit codes: 0 ok, 1 failed, 2 usage\n", f);
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
	if (cfg && !config_errors_count(&errs))
		tls_set_free(tls_set_new(cfg, &errs)); /* the certificates and keys, as --check */
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
	    {"version", no_argument, NULL, 'V'},
	    {"cacert", required_argument, NULL, 'C'},
	    {NULL, 0, NULL, 0},
	};
	struct ctl ctl = {getenv("CANARYD_SERVER"), getenv("CANARYD_TOKEN"), 0, 0, NULL};
	int c, rc;

	if (!ctl.server || !*ctl.server)
		ctl.server = "http://127.0.0.1:9901";
	ctl.cacert = getenv("CANARYD_CACERT");
	if (ctl.cacert && !*ctl.cacert)
		ctl.cacert = NULL;
	/* "+": stop at the verb so verbs parse their own options */
	while ((c = getopt_long(argc, argv, "+o:hV", lopts, NULL)) != -1) {
		switch (c) {
		case 's':
			ctl.server = optarg;
			break;
		case 't':
			ctl.token = optarg;
			break;
		case 'C':
			ctl.cacert = optarg;
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
		case 'V':
			puts("canaryctl " CANARYD_VERSION);
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
			if (!verbs[i].own_help && wants_help(argc - optind, argv + optind)) {
				printf("usage: canaryctl %s\n", verbs[i].usage);
				return CTL_OK;
			}
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
