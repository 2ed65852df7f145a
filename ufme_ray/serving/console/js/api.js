// The public /api/v1 API, called with the signed-in key. The key lives in this tab's
// sessionStorage only and travels in the Authorization header, never in a URL.

const KEY_SLOT = "ufme.console.key";
const API = new URL("../api/v1/", document.baseURI);

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || null;
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY_SLOT);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_SLOT);
}

// Check a key against GET /keys/me; keep it only if the service accepts it.
export async function signIn(key) {
  const me = await call("keys/me", { key });
  sessionStorage.setItem(KEY_SLOT, key);
  return me;
}

// One API call: `path` under /api/v1/, `query` an object of parameters (empty ones left out),
// `form` a FormData body or `json` a JSON one. Resolves with the JSON answer; rejects with an
// ApiError carrying the API's own code and message (or what went wrong on the way).
export async function call(path, { method = "GET", query, form, json, key = storedKey() } = {}) {
  const url = new URL(path, API);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (form) body = form;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body, cache: "no-store", credentials: "omit" });
  } catch (error) {
    throw new ApiError(0, "network_error", `the service did not answer (${error.message})`);
  }
  const text = await response.text();
  let answer = null;
  try {
    answer = text ? JSON.parse(text) : null;
  } catch {
    throw new ApiError(response.status, "bad_answer", `HTTP ${response.status}: the answer is not JSON`);
  }
  if (!response.ok) {
    const error = answer && answer.error;
    if (error) throw new ApiError(response.status, error.code, error.message, error.details);
    throw new ApiError(response.status, "http_error", `HTTP ${response.status} ${response.statusText}`);
  }
  return answer;
}

// A path segment (gallery or subject id) as the URL needs it.
export const seg = encodeURIComponent;
