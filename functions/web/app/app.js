// The page: sign in, convert videos (one row each: upload progress, then the job's state),
// your files, and for admins the users. api.js talks to the server.
import * as api from "./api.js";

const $ = (id) => document.getElementById(id);
const pollEvery = 1000; // ms between looks at a job being converted

// el builds an element: el("li", {class: "row"}, child, "text", ...).
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

// announce says a change to screen readers (the visible rows change too).
function announce(text) {
  $("announce").textContent = "";
  requestAnimationFrame(() => { $("announce").textContent = text; });
}

function show(elem, visible) { elem.hidden = !visible; }

function message(elem, text, ok = false) {
  elem.textContent = text || "";
  elem.classList.toggle("ok", ok);
  show(elem, !!text);
}

// ---- signing in and out ----

function signedIn() {
  const c = api.claims();
  return c && (!c.exp || c.exp * 1000 > Date.now());
}

function showSignIn(text) {
  api.forgetToken();
  show($("app-view"), false);
  show($("who"), false);
  show($("signin-view"), true);
  message($("signin-message"), text);
  if (text) announce(text);
  $("email").focus();
}

function showApp() {
  const c = api.claims();
  show($("signin-view"), false);
  show($("app-view"), true);
  show($("who"), true);
  $("who-email").textContent = c.username || "";
  show($("tabs"), !!c.admin);
  showTab("files");
  $("uploads").replaceChildren();
  loadFiles(true);
}

api.whenSignedOut((text) => showSignIn(text));

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const email = $("email").value.trim();
  const password = $("password").value;
  if (!email || !password) {
    message($("signin-message"), "Enter your email and your password.");
    return;
  }
  $("signin-button").disabled = true;
  try {
    await api.signIn(email, password);
    $("password").value = "";
    message($("signin-message"), "");
    showApp();
    announce("Signed in as " + email);
  } catch (err) {
    message($("signin-message"), err.message);
    announce(err.message);
    $("password").select();
  } finally {
    $("signin-button").disabled = false;
  }
});

$("signout").addEventListener("click", () => showSignIn("You are signed out."));

// ---- converting: a row per file ----

const stateWords = {
  uploading: "Uploading",
  uploaded: "Uploaded, waiting to convert",
  converting: "Converting",
  done: "Done",
  failed: "Failed",
};

// A row shows one file: its name, a state, a detail line, a progress bar, and actions.
function fileRow(name) {
  const row = {
    state: el("span", { class: "state" }),
    detail: el("span", { class: "detail" }),
    bar: el("progress", { max: "100", "aria-label": "Progress of " + name }),
    actions: el("span", { class: "actions" }),
  };
  row.li = el("li", { class: "row" }, el("span", { class: "name" }, name), row.state, row.detail, row.bar, row.actions);
  return row;
}

function setRow(row, state, detail, percent) {
  row.li.className = "row " + state;
  row.li.dataset.state = state;
  row.state.textContent = stateWords[state] || state;
  row.detail.textContent = detail || "";
  if (percent === undefined) {
    show(row.bar, state === "uploaded" || state === "converting");
    row.bar.removeAttribute("value"); // indeterminate: under way, no figure
  } else {
    show(row.bar, true);
    row.bar.value = percent;
  }
}

// downloadLink is a plain link to the MP3: the browser downloads it natively.
function downloadLink(job) {
  if (!job.download_url) return null;
  return el("a", { class: "download", href: job.download_url, download: mp3Name(job.filename) },
    "Download", el("span", { class: "visually-hidden" }, " " + mp3Name(job.filename)));
}

function mp3Name(filename) {
  return (filename || "audio").replace(/\.[^./\\]*$/, "") + ".mp3";
}

async function convert(file) {
  const row = fileRow(file.name);
  $("uploads").prepend(row.li);
  setRow(row, "uploading", "Starting…", 0);
  const started = performance.now();
  let lastSaid = -1;
  try {
    const answer = await api.upload(file, (sent, total) => {
      const percent = total ? Math.floor((sent * 100) / total) : 0;
      const seconds = (performance.now() - started) / 1000;
      const rate = seconds > 0 ? api.bytes(sent / seconds) + "/s" : "";
      setRow(row, "uploading", `${percent}% · ${api.bytes(sent)} of ${api.bytes(total)} · ${rate}`, percent);
      if (percent >= lastSaid + 25) { // not every tick: a screen reader would say nothing else
        lastSaid = percent - (percent % 25);
        announce(`${file.name}: uploaded ${lastSaid}%`);
      }
    }, (wait) => setRow(row, "uploading", `The server is busy: trying again in ${wait} s…`, 0),
    (message) => setRow(row, "uploading", message, row.bar.value));
    setRow(row, "uploaded", "Uploaded " + api.bytes(file.size));
    announce(file.name + " uploaded, waiting to convert");
    await follow(row, file.name, answer.video_fid);
  } catch (err) {
    if (err.signedOut) return;
    setRow(row, "failed", err.message);
    announce(file.name + " failed: " + err.message);
  }
}

// follow looks at the job until it is done or failed.
async function follow(row, name, fid) {
  let said = "";
  for (;;) {
    const job = await api.request("GET", "/jobs/" + encodeURIComponent(fid), {
      onBusy: (wait) => setRow(row, row.li.dataset.state, `The server is busy: looking again in ${wait} s…`),
    });
    if (job.state === "converting" && typeof job.progress === "number") {
      setRow(row, "converting", job.progress + "%", job.progress);
    } else if (job.state === "done") {
      setRow(row, "done", "Your MP3 is ready.");
      row.actions.replaceChildren(downloadLink(job) || "");
    } else if (job.state === "failed") {
      setRow(row, "failed", reasonWords(job.reason));
    } else {
      setRow(row, job.state, "");
    }
    if (job.state !== said) {
      said = job.state;
      announce(name + ": " + (stateWords[job.state] || job.state) + (job.state === "failed" ? ", " + reasonWords(job.reason) : ""));
    }
    if (job.state === "done" || job.state === "failed") {
      loadFiles(true);
      return;
    }
    await new Promise((done) => setTimeout(done, pollEvery));
  }
}

function reasonWords(reason) {
  if (!reason) return "The conversion failed.";
  return reason.charAt(0).toUpperCase() + reason.slice(1) + (reason.endsWith(".") ? "" : ".");
}

function convertAll(files) {
  for (const f of files) convert(f);
}

$("file-input").addEventListener("change", (e) => {
  convertAll([...e.target.files]);
  e.target.value = ""; // the same file can be chosen again
});

const zone = $("dropzone");
zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => {
  e.preventDefault();
  zone.classList.remove("over");
  convertAll([...e.dataTransfer.files]);
});
// A drop anywhere else must not open the file in the tab.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => e.preventDefault());

// ---- your files ----

let nextPage = "";

async function loadFiles(fromStart) {
  const query = "/jobs?limit=10" + (fromStart || !nextPage ? "" : "&before=" + encodeURIComponent(nextPage));
  try {
    const page = await api.request("GET", query);
    if (fromStart) $("files").replaceChildren();
    for (const job of page.jobs) $("files").append(jobRow(job));
    nextPage = page.next || "";
    show($("files-more"), !!nextPage);
    show($("files-empty"), $("files").children.length === 0);
  } catch (err) {
    if (!err.signedOut) {
      $("files").replaceChildren(el("li", { class: "row failed" }, el("span", { class: "detail" }, err.message)));
    }
  }
}

function jobRow(job) {
  const row = fileRow(job.filename || job.video_fid);
  const when = new Date(job.created_at).toLocaleString();
  let detail = when + " · " + api.bytes(job.size);
  if (job.state === "failed") detail = when + " · " + reasonWords(job.reason);
  setRow(row, job.state, detail, job.state === "converting" && typeof job.progress === "number" ? job.progress : undefined);
  show(row.bar, job.state === "converting" || job.state === "uploaded");
  if (job.state === "done") row.actions.append(downloadLink(job) || "");
  row.li.dataset.fid = job.video_fid;
  return row.li;
}

$("files-more").addEventListener("click", () => loadFiles(false));

// ---- users (admins only) ----

function showTab(which) {
  const users = which === "users";
  show($("files-view"), !users);
  show($("users-view"), users);
  $("tab-files").setAttribute("aria-pressed", String(!users));
  $("tab-users").setAttribute("aria-pressed", String(users));
  if (users) loadUsers();
}

$("tab-files").addEventListener("click", () => showTab("files"));
$("tab-users").addEventListener("click", () => showTab("users"));

async function loadUsers() {
  try {
    const { users } = await api.request("GET", "/users");
    $("users").replaceChildren(...users.map(userRow));
  } catch (err) {
    if (!err.signedOut) message($("user-message"), err.message);
  }
}

function userRow(user) {
  const email = user.email;
  const path = "/users/" + encodeURIComponent(email);
  const detail = el("span", { class: "detail" }, (user.admin ? "Administrator" : "User") + " · since " + new Date(user.created_at).toLocaleDateString());
  const remove = el("button", { type: "button", class: "danger" }, "Delete", el("span", { class: "visually-hidden" }, " " + email));
  const reset = el("button", { type: "button", class: "secondary", "aria-expanded": "false" }, "Reset password", el("span", { class: "visually-hidden" }, " of " + email));
  const li = el("li", { class: "row", "data-email": email }, el("span", { class: "name" }, email), detail, el("span", { class: "actions" }, reset, remove));

  // Deleting asks once more on the same button: no dialog, keyboard-friendly.
  remove.addEventListener("click", async () => {
    if (remove.dataset.confirm !== "yes") {
      remove.dataset.confirm = "yes";
      remove.firstChild.textContent = "Really delete?";
      return;
    }
    try {
      await api.request("DELETE", path);
      li.remove();
      message($("user-message"), email + " was deleted.", true);
      announce(email + " was deleted");
    } catch (err) {
      if (!err.signedOut) message($("user-message"), err.message);
    }
  });

  reset.addEventListener("click", () => {
    const open = li.querySelector("form");
    if (open) { open.remove(); reset.setAttribute("aria-expanded", "false"); return; }
    const id = "pw-" + user.id;
    const input = el("input", { id, type: "password", autocomplete: "new-password", required: true });
    const form = el("form", { novalidate: true },
      el("label", { for: id }, "New password for " + email), input, el("button", { type: "submit" }, "Save"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api.request("PUT", path + "/password", { json: { password: input.value } });
        form.remove();
        reset.setAttribute("aria-expanded", "false");
        message($("user-message"), "The password of " + email + " was changed.", true);
        announce("The password of " + email + " was changed");
      } catch (err) {
        if (!err.signedOut) message($("user-message"), err.message);
      }
    });
    li.append(form);
    reset.setAttribute("aria-expanded", "true");
    input.focus();
  });
  return li;
}

$("user-add").addEventListener("submit", async (e) => {
  e.preventDefault();
  const email = $("new-email").value.trim();
  try {
    await api.request("POST", "/users", { json: { email, password: $("new-password").value, admin: $("new-admin").checked } });
    $("new-email").value = "";
    $("new-password").value = "";
    $("new-admin").checked = false;
    message($("user-message"), email + " was added.", true);
    announce(email + " was added");
    loadUsers();
  } catch (err) {
    if (!err.signedOut) message($("user-message"), err.message);
  }
});

// ---- start ----

if (signedIn()) {
  showApp();
} else {
  showSignIn(api.token() ? "Your session ended. Please sign in again." : "");
}
