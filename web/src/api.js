// The dashboard's only way to the server: the /v1 API with the signed-in token
// in the Authorization header (never a cookie, so a cross-site request carries
// nothing: CSRF-proof). The token lives in sessionStorage: this tab only.

const KEY = "canaryd.token";

export function token() {
  return sessionStorage.getItem(KEY) || "";
}

export function setToken(t) {
  if (t) sessionStorage.setItem(KEY, t);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(path, { method = "GET", body, tok } = {}) {
  const headers = { Authorization: "Bearer " + (tok ?? token()) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(res.status, e.code || "http_" + res.status, e.message || res.statusText);
  }
  return data;
}

// GET /v1/events/stream read with fetch (EventSource cannot send a header).
// onEvent(row) per event; onState("live" | "broken"). Reconnects with
// Last-Event-ID after a break, backing off up to 5 s. Returns a stop function.
export function eventStream(onEvent, onState) {
  let stopped = false;
  let lastId = "";
  let ctrl = null;
  let delay = 500;

  async function once() {
    ctrl = new AbortController();
    const headers = { Authorization: "Bearer " + token(), Accept: "text/event-stream" };
    if (lastId) headers["Last-Event-ID"] = lastId;
    const res = await fetch("/v1/events/stream", {
      headers,
      signal: ctrl.signal,
      credentials: "omit",
      cache: "no-store",
    });
    if (!res.ok || !res.body) throw new Error("stream answered " + res.status);
    onState("live");
    delay = 500;
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error("stream ended");
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let id = "", ev = "", data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const i = line.indexOf(":");
          const f = i < 0 ? line : line.slice(0, i);
          const v = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
          if (f === "id") id = v;
          else if (f === "event") ev = v;
          else if (f === "data") data.push(v);
        }
        if (id) lastId = id;
        if (ev === "reset") {
          onEvent({ kind: "reset" });
          continue;
        }
        if (data.length) {
          try {
            onEvent(JSON.parse(data.join("\n")));
          } catch {
            /* not an event row: ignored */
          }
        }
      }
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await once();
      } catch {
        if (stopped) break;
        onState("broken");
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5000);
      }
    }
  })();
  return () => {
    stopped = true;
    if (ctrl) ctrl.abort();
  };
}
