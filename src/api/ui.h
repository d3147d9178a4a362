/*
 * ui.h - the dashboard (SPEC 7 GET /ui/, docs/dashboard.md) and the identity
 * route it signs in with.
 *
 * The dashboard's built files (web/dist) are embedded in the binary at build
 * time (web/embed.py writes a table of path -> bytes, content type, ETag into
 * the build tree), so nothing is read from disk at run time.  GET /ui/ and
 * /ui/assets/{file} need no token (the page holds none until the user signs
 * in); they answer with ETag (304 on If-None-Match), Cache-Control no-cache
 * and the security headers admin.c sends on every response (a strict CSP,
 * nosniff, no referrer, no framing).
 *
 * GET /v1/whoami (any valid token): {"name", "scopes": [...]} so the page
 * shows only the controls the token may use; the API still checks every call.
 *
 * Threads: control thread only.
 */
#ifndef API_UI_H
#define API_UI_H

#include <stddef.h>

struct api;

/* One embedded file; the table is generated (ui_assets.c in the build tree). */
struct ui_asset {
	const char *path; /* "index.html", "assets/app.js" */
	const unsigned char *data;
	size_t len;
	const char *content_type;
	const char *etag; /* quoted strong ETag of the bytes */
};

extern const struct ui_asset ui_assets[];
extern const size_t ui_nassets;

/* The asset at path (relative to /ui/), or NULL. */
const struct ui_asset *ui_asset_find(const char *path, size_t len);

/*
 * Appends the families the exported alert rules need and nothing else
 * exports (canaryctl export prometheus-rules, docs/metrics.md):
 * canaryd_store_up (1 while the store answers) and
 * canaryd_rollout_waiting{rollout,reason} (1 while the rollout's current step
 * waits for reason "approval", "review" or "evidence").  A full buffer
 * truncates the text as for the other families (the buffer keeps its cap).
 */
struct buf;
void api_ui_write_metrics(struct api *api, struct buf *out);

/* Registers /ui, /ui/, /ui/assets/{file} and /v1/whoami.  0 or -ENOSPC. */
int api_ui_init(struct api *api);

#endif
