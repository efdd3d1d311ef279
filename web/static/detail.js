// The larger view of one photo: a modal <dialog> (Esc closes, focus stays
// inside), with its path, metadata, stored captions, "more like this",
// and ←/→ to step through the current results.  Its id lives in the URL as
// &view=ID, so the back button closes it and a link can open it.

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);
let ctx = null;
let currentId = null;
let pushed = false;          // did opening add a history entry (so closing goes back)?
let leaveHistory = false;    // close without touching history (navigation takes over)
let returnFocusTo = null;
let generation = 0;

export function initDetail(context) {
  ctx = context;
  const dialog = $("detail");
  $("detail-close").addEventListener("click", () => dialog.close());
  $("detail-prev").addEventListener("click", () => step(-1));
  $("detail-next").addEventListener("click", () => step(1));
  $("more-like-this").addEventListener("click", () => {
    const id = currentId;
    leaveHistory = true;
    dialog.close();
    ctx.moreLikeThis(id);
  });
  dialog.addEventListener("keydown", (e) => {
    if (e.key === "ArrowLeft") { e.preventDefault(); step(-1); }
    if (e.key === "ArrowRight") { e.preventDefault(); step(1); }
  });
  // Clicking the backdrop (outside the panel) closes, as people expect.
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
  dialog.addEventListener("close", onClosed);
  $("detail-img").addEventListener("error", async () => {
    const img = $("detail-img");
    if (!img.getAttribute("src")) return;
    const note = $("detail-img-error");
    const mine = generation;
    note.textContent = "Preview unavailable…";
    note.hidden = false;
    await ctx.imageFailed(img, img.src);
    if (mine === generation) note.textContent = img.alt;
  });
}

export function isDetailOpen() {
  return $("detail").open;
}

export function closeDetail({ fromHistory = false } = {}) {
  if (!isDetailOpen()) return;
  leaveHistory = fromHistory;
  $("detail").close();
}

function onClosed() {
  if (!leaveHistory) {
    if (pushed) history.back();
    else ctx.setUrl({ view: null, push: false });
  }
  leaveHistory = false;
  pushed = false;
  generation++;
  // Back to the photo last shown (it may have changed with ←/→), else to where we came from.
  const target = document.querySelector(`#results .card[data-id="${currentId}"]`) || returnFocusTo;
  if (target && document.body.contains(target)) target.focus();
  returnFocusTo = null;
}

export async function openDetail(id, { push = true } = {}) {
  const dialog = $("detail");
  if (!dialog.open) {
    returnFocusTo = document.querySelector(`#results .card[data-id="${id}"]`) || document.activeElement;
    if (push) { ctx.setUrl({ view: id, push: true }); pushed = true; }
    dialog.showModal();
  } else {
    ctx.setUrl({ view: id, push: false });
  }
  currentId = id;
  const mine = ++generation;
  showLoading(id);
  $("more-like-this").focus();
  try {
    const info = await api(`/api/images/${id}`);
    if (mine === generation) fill(info);
  } catch (err) {
    if (mine !== generation) return;
    dialog.close();
    ctx.showError(err);
  }
}

function step(delta) {
  const results = ctx.results();
  const i = results.findIndex((r) => r.id === currentId);
  const next = results[i + delta];
  if (i >= 0 && next) openDetail(next.id, { push: false });
}

function showLoading(id) {
  $("detail-title").textContent = `Photo #${id}`;
  $("detail-path").textContent = "Loading…";
  $("detail-meta").replaceChildren();
  $("detail-captions").replaceChildren();
  $("detail-img-error").hidden = true;
  $("detail-img").removeAttribute("src");
  $("detail-img").alt = "";
  const results = ctx.results();
  const i = results.findIndex((r) => r.id === id);
  $("detail-prev").disabled = i <= 0;
  $("detail-next").disabled = i < 0 || i >= results.length - 1;
}

function fill(info) {
  $("detail-title").textContent = info.name;
  $("detail-path").textContent = info.path;
  const img = $("detail-img");
  img.alt = info.name;
  img.src = info.preview_url;
  $("detail-open").href = info.file_url;
  const hit = ctx.results().find((r) => r.id === info.id);
  const rows = [
    ["Score", hit ? hit.score.toFixed(4) : null],
    ["Dimensions", `${info.width} × ${info.height}`],
    ["Format", info.format],
    ["File size", formatBytes(info.size)],
    ["Taken", formatDate(info.taken_at)],
    ["Modified", formatDate(info.modified_at)],
    ["Indexed", formatDate(info.indexed_at)],
    ["Id", String(info.id)],
  ];
  const meta = $("detail-meta");
  meta.replaceChildren();
  for (const [label, value] of rows) {
    if (value === null || value === undefined) continue;
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value;
    meta.append(dt, dd);
  }
  renderOwnCaptions(info.captions);
}

function renderOwnCaptions(captions) {
  const box = $("detail-captions");
  box.replaceChildren();
  if (!captions.length) return;
  const h = document.createElement("h3");
  h.textContent = "Captions";
  const ul = document.createElement("ul");
  ul.className = "captions";
  for (const c of captions) {
    const li = document.createElement("li");
    li.textContent = c.text;
    ul.append(li);
  }
  box.append(h, ul);
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB"];
  let value = n / 1024;
  let u = 0;
  while (value >= 1024 && u < units.length - 1) { value /= 1024; u++; }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[u]}`;
}

export function formatDate(iso) {
  if (!iso) return null;
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}
