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

// Uploads are resumable (tus 1.0 at /upload/, a small client of our own: no bundle to vendor,
// and nothing but same-origin requests, as the page's CSP wants). The upload's URL is kept in
// localStorage under the file's name, size and date, so a dropped connection resumes by itself
// and a reloaded page resumes when the same file is chosen again: only the rest is sent.
const uploadKeyPrefix = "mp3converter.upload:";
const tusHeaders = () => ({
  "Tus-Resumable": "1.0.0",
  Authorization: "Bearer " + token(),
  "X-Requested-With": "XMLHttpRequest",
});
const maxResumes = 30; // tries in a row while the network is up, before giving up

function uploadKey(file) {
  return uploadKeyPrefix + JSON.stringify([claims()?.username || "", file.name, file.size, file.lastModified]);
}

// upload sends one file (streamed by the browser, never read into the page), reports
// progress(sentBytes, totalBytes), onBusy(seconds) when the server is busy and onWait(message)
// while it waits to resume. It resolves to the job: {video_fid, status_url}.
export async function upload(file, progress, onBusy, onWait = () => {}) {
  const key = uploadKey(file);
  let url = localStorage.getItem(key);
  let offset = 0;
  if (url) {
    const state = await tusHead(url).catch((err) => (err.status === 404 ? null : { offset: 0 }));
    if (state?.done) {
      localStorage.removeItem(key);
      return state.done;
    }
    if (state) offset = state.offset; else url = null; // expired: start again
  }
  if (!url) {
    url = await tusCreate(file, onBusy);
    localStorage.setItem(key, url);
  }
  for (let tries = 0; ; tries++) {
    try {
      const state = await tusPatch(url, file, offset, progress);
      if (state.done) {
        localStorage.removeItem(key);
        return state.done;
      }
      offset = state.offset;
      tries = -1;
      continue;
    } catch (err) {
      if (!err.resume || tries >= maxResumes) {
        if (!err.resume) localStorage.removeItem(key);
        throw err;
      }
      if (err.status === 503 && err.wait) onBusy(err.wait);
      else onWait(navigator.onLine ? "Connection lost: resuming…" : "Offline: the upload resumes when the connection is back…");
      // Growing waits: a request the network cut off may hold the upload on the server (423)
      // until the server notices, UPLOAD_IDLE_TIMEOUT at most.
      await whenOnline(Math.max(err.wait, Math.min(2 ** tries, 10)));
    }
    try {
      const state = await tusHead(url);
      if (state.done) {
        localStorage.removeItem(key);
        return state.done;
      }
      offset = state.offset;
    } catch (err) {
      if (!err.resume) {
        localStorage.removeItem(key);
        throw err;
      }
    }
  }
}

// whenOnline waits seconds, or while the browser is offline until it is back.
function whenOnline(seconds) {
  return new Promise((done) => {
    if (!navigator.onLine) {
      window.addEventListener("online", () => done(), { once: true });
      return;
    }
    setTimeout(done, seconds * 1000);
  });
}

// resumable marks an error after which the upload is worth resuming.
function resumable(err, wait = 0) {
  err.resume = true;
  err.wait = wait;
  return err;
}

const cutOff = () => resumable(new ApiError("The upload was cut off. Check your connection and try again.", 0));

async function tusCreate(file, onBusy) {
  const b64 = (s) => btoa(unescape(encodeURIComponent(s)));
  for (let attempt = 0; ; attempt++) {
    let resp;
    try {
      resp = await fetch("/upload/", {
        method: "POST",
        headers: { ...tusHeaders(), "Upload-Length": String(file.size),
          "Upload-Metadata": "filename " + b64(file.name) + ",filetype " + b64(file.type || "application/octet-stream") },
      });
    } catch {
      throw new ApiError("The server cannot be reached. Check your connection and try again.", 0);
    }
    if (resp.status === 201) return new URL(resp.headers.get("Location"), location.href).pathname; // same origin
    const retry = resp.headers.get("Retry-After");
    if (resp.status === 503 && retry && attempt < busyRetries) {
      onBusy(retryAfter(retry));
      await new Promise((done) => setTimeout(done, retryAfter(retry) * 1000));
      continue;
    }
    throw await errorOf(resp.status, () => resp.json(), retry);
  }
}

// tusHead asks how much of the upload the server has: {offset, done}.
async function tusHead(url) {
  let resp;
  try {
    resp = await fetch(url, { method: "HEAD", headers: tusHeaders(), cache: "no-store" });
  } catch {
    throw cutOff();
  }
  if (resp.ok) return tusState((name) => resp.headers.get(name));
  throw await tusError(resp.status, () => { throw new Error("HEAD has no body"); }, resp.headers.get("Retry-After"));
}

// tusPatch sends the file from offset: {offset, done}. When the browser says it went offline,
// or no byte goes out for stallSeconds, the request is given up (a dropped network often
// leaves a connection hanging, not closed) and the caller resumes from the server's offset.
const stallSeconds = 30;

function tusPatch(url, file, offset, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    let stall;
    const watch = () => {
      clearTimeout(stall);
      stall = setTimeout(() => xhr.abort(), stallSeconds * 1000);
    };
    const giveUp = () => xhr.abort();
    const settle = (f, v) => {
      clearTimeout(stall);
      window.removeEventListener("offline", giveUp);
      f(v);
    };
    xhr.open("PATCH", url);
    for (const [name, value] of Object.entries(tusHeaders())) xhr.setRequestHeader(name, value);
    xhr.setRequestHeader("Content-Type", "application/offset+octet-stream");
    xhr.setRequestHeader("Upload-Offset", String(offset));
    xhr.upload.onprogress = (e) => {
      progress(offset + e.loaded, file.size);
      if (e.loaded < e.total) watch(); else clearTimeout(stall); // all sent: the server finishes
    };
    xhr.onerror = xhr.onabort = () => settle(reject, cutOff());
    xhr.onload = async () => {
      if (xhr.status === 204) {
        settle(resolve, tusState((name) => xhr.getResponseHeader(name)));
        return;
      }
      settle(reject, await tusError(xhr.status, () => JSON.parse(xhr.responseText), xhr.getResponseHeader("Retry-After")));
    };
    window.addEventListener("offline", giveUp);
    watch();
    xhr.send(file.slice(offset));
  });
}

function tusState(header) {
  const fid = header("Video-Fid");
  return {
    offset: Number(header("Upload-Offset")),
    done: fid ? { video_fid: fid, status_url: header("Status-Url") } : null,
  };
}

// tusError: what to resume after (busy, unreachable through web, held by a request that was
// cut off, another offset than ours), and the rest in the user's words.
async function tusError(status, readJSON, retry) {
  const err = await errorOf(status, readJSON, retry);
  if ([409, 423, 502, 503, 504].includes(status)) return resumable(err, retry ? retryAfter(retry) : 0);
  return err;
}

// bytes formats a size for people: 1.5 MB, 2 GB (powers of 1024, as the limits are set).
export function bytes(n) {
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n < 10 ? +n.toFixed(1) : Math.round(n)) + " " + units[i];
}
