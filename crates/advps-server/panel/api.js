// The panel's way to the API: /panel/api/v1/... with the session cookie,
// and on every change the session's CSRF token in X-CSRF-Token. The token
// lives in this module's memory only: a reload asks GET /panel/session for
// it again. The API key is sent once, to sign in, and never kept.

let csrfToken = null;

// Raised for every answer that is not a success; `message` is the API's.
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function send(method, url, { body, headers = {} } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD" && csrfToken) {
    init.headers["X-CSRF-Token"] = csrfToken;
  }
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, "The server cannot be reached: " + e.message, null);
  }
  if (response.status === 304) {
    return { status: 304, headers: response.headers, body: null };
  }
  let parsed = null;
  try {
    parsed = await response.json();
  } catch {
    parsed = null;
  }
  if (!response.ok) {
    const message = (parsed && parsed.message) || `${response.status} ${response.statusText}`;
    const error = new ApiError(response.status, message, parsed);
    if (response.status === 401) {
      csrfToken = null;
      window.dispatchEvent(new CustomEvent("panel:signed-out", { detail: message }));
    }
    throw error;
  }
  return { status: response.status, headers: response.headers, body: parsed };
}

// An API call through the session: `path` as the reference names it
// ("/services"), answered with the whole response.
export function call(method, path, options) {
  return send(method, "/panel/api/v1" + path, options);
}

// The `data` of a successful GET.
export async function get(path) {
  return (await call("GET", path)).body.data;
}

// The `data` of a successful POST (or DELETE) with an optional JSON body;
// `headers` adds request headers (an Idempotency-Key, say).
export async function post(path, body, headers = {}) {
  return (await call("POST", path, { body, headers })).body.data;
}

export async function del(path) {
  return (await call("DELETE", path)).body.data;
}

// Signs in with an API key; resolves with the session's account facts.
export async function signIn(apiKey) {
  const { body } = await send("POST", "/panel/session", { body: { apiKey } });
  csrfToken = body.data.csrfToken;
  return body.data;
}

// The current session, or null when there is none.
export async function currentSession() {
  try {
    const { body } = await send("GET", "/panel/session");
    csrfToken = body.data.csrfToken;
    return body.data;
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
}

export async function signOut() {
  try {
    await send("DELETE", "/panel/session");
  } finally {
    csrfToken = null;
  }
}
