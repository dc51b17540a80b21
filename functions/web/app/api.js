// The API of the functions behind web, as the page uses it: the token in sessionStorage,
// a busy server (503 with Retry-After) retried here, and every error in the user's words.

const tokenKey = "mp3converter.token";

export function token() { return sessionStorage.getItem(tokenKey); }
export function forgetToken() { sessionStorage.removeItem(tokenKey); }

// The claims of the token (username, admin, exp): read for display only; the functions check it.
export function claims() {
  const t = token();
  if (!t) return null;
  try {
    const part = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch {
    return null;
  }
}

// ApiError carries a message for the user; signedOut says the sign-in must come back.
export class ApiError extends Error {
  constructor(message, status, signedOut = false) {
    super(message);
    this.status = status;
    this.signedOut = signedOut;
  }
}

// onSignedOut is called when a token is refused (expired, or the user was deleted).
let onSignedOut = () => {};
export function whenSignedOut(f) { onSignedOut = f; }

const signedOutMessage = "You were signed out (your session ended). Please sign in again.";
const busyRetries = 20;

// retryAfter reads Retry-After in seconds (1 to 60; 5 when absent or odd).
export function retryAfter(value) {
  const n = parseInt(value, 10);
  return Number.isFinite(n) && n >= 1 ? Math.min(n, 60) : 5;
}

// onBusy(seconds) is told when the server is busy and the request will be retried.
export async function request(method, path, { body, json, onBusy } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { "X-Requested-With": "XMLHttpRequest" };
    if (token()) headers.Authorization = "Bearer " + token();
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    let resp;
    try {
      resp = await fetch(path, { method, headers, body });
    } catch {
      throw new ApiError("The server cannot be reached. Check your connection and try again.", 0);
    }
    if (resp.status === 503 && resp.headers.has("Retry-After") && attempt < busyRetries) {
      const wait = retryAfter(resp.headers.get("Retry-After"));
      if (onBusy) onBusy(wait);
      await new Promise((done) => setTimeout(done, wait * 1000));
      continue;
    }
    if (resp.ok) {
      return resp.status === 204 ? null : resp.json();
    }
    throw await errorOf(resp.status, () => resp.json(), resp.headers.get("Retry-After"));
  }
}

// errorOf turns a refusal into an ApiError with a message a person understands.
export async function errorOf(status, readJSON, retryAfterHeader) {
  let detail = "";
  try { detail = (await readJSON()).error || ""; } catch { /* not JSON */ }
  if (status === 401 && token()) {
    forgetToken();
    onSignedOut(signedOutMessage);
    return new ApiError(signedOutMessage, status, true);
  }
  return new ApiError(plainWords(status, detail, retryAfterHeader), status);
}

function plainWords(status, detail, retryAfterHeader) {
  switch (status) {
  case 401: return "Wrong email or password.";
  case 403: return "You are not allowed to do that.";
  case 404: return "Not found: it may have been deleted.";
  case 413: {
    const limit = /(\d+) bytes/.exec(detail);
    return "This file is too large" + (limit ? ": the limit is " + bytes(Number(limit[1])) + "." : ".");
  }
  case 415: return "This is not a video with sound" + (detail ? " (" + detail + ")." : ".");
  case 429: {
    const wait = retryAfterHeader ? Math.ceil(retryAfter(retryAfterHeader) / 60) : 0;
    return "Too many attempts. Try again" + (wait ? " in " + wait + " minute" + (wait > 1 ? "s" : "") : " later") + ".";
  }
  case 503: return "The server is busy. Try again in a moment.";
  }
  if (status >= 500) return "Something went wrong on the server. Try again in a moment.";
  return detail ? detail.charAt(0).toUpperCase() + detail.slice(1) + "." : "The request failed (" + status + ").";
}

// signIn asks login for a token with the email and password, and keeps it for this tab.
export async function signIn(email, password) {
  let resp;
  try {
    resp = await fetch("/login", {
      method: "POST",
      headers: {
        Authorization: "Basic " + btoa(unescape(encodeURIComponent(email + ":" + password))),
        "X-Requested-With": "XMLHttpRequest", // no browser password dialog on a refusal (web drops WWW-Authenticate)
      },
    });
  } catch {
    throw new ApiError("The server cannot be reached. Check your connection and try again.", 0);
  }
  if (!resp.ok) {
    forgetToken();
    throw await errorOf(resp.status, () => resp.json(), resp.headers.get("Retry-After"));
  }
  sessionStorage.setItem(tokenKey, (await resp.json()).access_token);
}

// upload sends one file as a raw body (streamed by the browser, never read into the page)
// and reports progress(sentBytes, totalBytes). It resolves to upload's answer.
export function upload(file, progress, onBusy) {
  const send = (attempt) => new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/upload?filename=" + encodeURIComponent(file.name));
    xhr.setRequestHeader("Authorization", "Bearer " + token());
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.upload.onprogress = (e) => progress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onerror = () => reject(new ApiError("The upload was cut off. Check your connection and try again.", 0));
    xhr.onload = async () => {
      if (xhr.status === 202) {
        resolve(JSON.parse(xhr.responseText));
        return;
      }
      const retry = xhr.getResponseHeader("Retry-After");
      if (xhr.status === 503 && retry && attempt < busyRetries) {
        const wait = retryAfter(retry);
        onBusy(wait);
        setTimeout(() => send(attempt + 1).then(resolve, reject), wait * 1000);
        return;
      }
      reject(await errorOf(xhr.status, () => JSON.parse(xhr.responseText), retry));
    };
    xhr.send(file);
  });
  return send(0);
}

// bytes formats a size for people: 1.5 MB, 2 GB (powers of 1024, as the limits are set).
export function bytes(n) {
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n < 10 ? +n.toFixed(1) : Math.round(n)) + " " + units[i];
}
