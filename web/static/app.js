// Sightline's search page: text, image and "more like this" queries, results
// grid with paging on scroll, query state in the URL (?q=…, ?similar=ID,
// &view=ID for the open photo) so searches can be bookmarked and shared.

import { api, ApiError, explainImageFailure } from "./api.js";
import { initDetail, openDetail, closeDetail, isDetailOpen } from "./detail.js";

const PAGE = 30;
const CAPTIONS = 8;
const $ = (id) => document.getElementById(id);

const state = {
  mode: null,        // "text" | "similar" | "image" | null
  q: "", id: null, file: null, fileUrl: null,
  min: null,         // optional minimum score (?min=0.25), kept in the URL
  next: 0,           // offset of the next page; null when there is no more
  loading: false,
  generation: 0,     // bumps on every new query so stale answers are dropped
  results: [],
  indexImages: null,
};

// ------------------------------------------------------------------ status
async function loadStatus() {
  try {
    const s = await api("/api/status");
    state.indexImages = s.images;
    const parts = [`${s.images.toLocaleString()} photo${s.images === 1 ? "" : "s"}`];
    if (s.captions) parts.push(`${s.captions.toLocaleString()} captions`);
    if (s.model) parts.push(s.model.split("#")[0]);
    if (s.last_indexed) parts.push(`indexed ${new Date(s.last_indexed).toLocaleDateString()}`);
    $("index-status").textContent = parts.join(" · ");
    if (s.images === 0) showEmptyIndex();
  } catch (err) {
    showError(err);
  }
}

// --------------------------------------------------------------- messages
function showError(err) {
  const known = err instanceof ApiError;
  $("error-title").textContent = known && err.status ? `Error ${err.status} (${err.type}):` : "Error:";
  $("error-message").textContent = err.message || String(err);
  $("error").hidden = false;
}

function clearError() { $("error").hidden = true; }

function showMessage(title, body) {
  const box = $("message");
  box.replaceChildren();
  const h = document.createElement("p");
  h.className = "message-title";
  h.textContent = title;
  box.append(h);
  for (const line of [].concat(body || [])) {
    const p = document.createElement("p");
    if (line.code) {
      const code = document.createElement("code");
      code.textContent = line.code;
      p.append(code);
    } else p.textContent = line;
    box.append(p);
  }
  box.hidden = false;
}

function showEmptyIndex() {
  showMessage("This index has no photos yet.", [
    "Index a folder of photos, then reload this page:",
    { code: "sightline index ~/Pictures" },
  ]);
}

function showWelcome() {
  if (state.indexImages === 0) return showEmptyIndex();
  showMessage("Search your photos.", [
    "Describe what you are looking for (“a dog on a beach”, “red car at night”), or drop, paste or pick an image to find similar ones.",
  ]);
}

// --------------------------------------------------------------- URL state
function queryParams() {
  const p = new URLSearchParams();
  if (state.mode === "text") p.set("q", state.q);
  if (state.mode === "similar") p.set("similar", String(state.id));
  if (state.mode && state.mode !== "image" && state.min !== null) p.set("min", String(state.min));
  return p;
}

export function setUrl({ view = null, push = true } = {}) {
  const p = queryParams();
  if (view !== null) p.set("view", String(view));
  const url = p.toString() ? `?${p}` : location.pathname;
  const entry = { view, upload: state.mode === "image" };
  if (push) history.pushState(entry, "", url); else history.replaceState(entry, "", url);
}

function queryKey(search) {
  const p = new URLSearchParams(search);
  return `${p.get("q") ?? ""}\u0000${p.get("similar") ?? ""}\u0000${p.get("min") ?? ""}`;
}
let shownKey = null;

async function applyUrl() {
  const p = new URLSearchParams(location.search);
  const key = queryKey(location.search);
  if (key !== shownKey && !(history.state && history.state.upload && state.mode === "image")) {
    shownKey = key;
    const similar = parseInt(p.get("similar") || "", 10);
    const min = parseFloat(p.get("min") || "");
    state.min = Number.isFinite(min) ? min : null;
    if (p.get("q")) startText(p.get("q"), false);
    else if (similar > 0) startSimilar(similar, false);
    else resetQuery();
  }
  const view = parseInt(p.get("view") || "", 10);
  if (view > 0) openDetail(view, { push: false });
  else if (isDetailOpen()) closeDetail({ fromHistory: true });
}

// ---------------------------------------------------------------- queries
function resetQuery() {
  state.mode = null;
  state.generation++;
  $("q").value = "";
  $("results").replaceChildren();
  $("results-heading").textContent = "";
  $("more").hidden = true;
  $("query-aside").hidden = true;
  showWelcome();
}

function begin(mode, push) {
  state.mode = mode;
  state.generation++;
  state.next = 0;
  state.results = [];
  state.loading = false;
  $("results").replaceChildren();
  $("message").hidden = true;
  clearError();
  if (push !== null) { setUrl({ push }); shownKey = queryKey(location.search); }
  return loadPage();
}

export function startText(q, push = true) {
  q = q.trim();
  if (!q) return;
  state.q = q;
  $("q").value = q;
  document.title = `${q} · Sightline`;
  $("query-aside").hidden = true;
  return begin("text", push);
}

export function startSimilar(id, push = true) {
  state.id = id;
  $("q").value = "";
  document.title = `More like #${id} · Sightline`;
  showQueryImage(`/api/images/${id}/thumbnail?size=large`, `More like photo #${id}`);
  return begin("similar", push);
}

function startImage(file) {
  if (!file.type.startsWith("image/")) {
    showError(new ApiError(415, "unsupported_media_type", `“${file.name}” is not an image`));
    return;
  }
  if (state.fileUrl) URL.revokeObjectURL(state.fileUrl);
  state.file = file;
  state.fileUrl = URL.createObjectURL(file);
  $("q").value = "";
  document.title = "Image search · Sightline";
  showQueryImage(state.fileUrl, file.name || "Pasted image");
  // An upload cannot live in a URL: the address becomes the start page.
  return begin("image", true);
}

function showQueryImage(src, label) {
  $("query-image").src = src;
  $("query-label").textContent = label;
  $("captions").replaceChildren();
  $("captions-note").hidden = true;
  $("query-aside").hidden = false;
}

function request(offset) {
  const page = `k=${PAGE}&offset=${offset}` + (state.min !== null && state.mode !== "image" ? `&min_score=${state.min}` : "");
  const withCaptions = offset === 0 ? `&captions=${CAPTIONS}` : "";
  if (state.mode === "text") return api(`/api/search/text?q=${encodeURIComponent(state.q)}&${page}`);
  if (state.mode === "similar") return api(`/api/images/${state.id}/similar?${page}${withCaptions}`);
  const form = new FormData();
  form.append("file", state.file, state.file.name || "upload");
  return api(`/api/search/image?${page}${withCaptions}`, { method: "POST", body: form });
}

async function loadPage() {
  if (state.loading || state.next === null || !state.mode) return;
  const generation = state.generation;
  const offset = state.next;
  setLoading(true);
  try {
    const answer = await request(offset);
    if (generation !== state.generation) return;
    state.next = answer.next_offset;
    state.indexImages = answer.index_images;
    renderPage(answer, offset);
  } catch (err) {
    if (generation !== state.generation) return;
    state.next = null;
    // A failed "more like this" has no query photo worth showing.
    if (state.mode === "similar" && offset === 0) $("query-aside").hidden = true;
    showError(err);
  } finally {
    if (generation === state.generation) setLoading(false);
  }
}

function setLoading(on) {
  state.loading = on;
  $("loading").hidden = !on;
  $("results").setAttribute("aria-busy", String(on));
  $("more").hidden = on || state.next === null;
}

// ---------------------------------------------------------------- results
function renderPage(answer, offset) {
  const start = state.results.length;
  state.results.push(...answer.results);
  const list = $("results");
  answer.results.forEach((hit, i) => list.append(card(hit, start + i)));
  if (answer.captions) renderCaptions(answer.captions, answer.captions_note);
  if (offset === 0) summarize(answer);
}

function summarize(answer) {
  const n = answer.results.length;
  const what = state.mode === "text" ? `“${state.q}”` : state.mode === "similar" ? `photo #${state.id}` : "your image";
  if (answer.index_images === 0) {
    $("results-heading").textContent = "";
    return showEmptyIndex();
  }
  const floor = state.min !== null && state.mode !== "image" ? ` with a score of at least ${state.min}` : "";
  if (n === 0) {
    $("results-heading").textContent = "No results";
    return showMessage(`No photos matched ${what}${floor}.`,
      [floor ? "Lower or remove the minimum score (min= in the address)." : "Try other words, or a different image."]);
  }
  $("results-heading").textContent = (state.mode === "text" ? `Photos matching ${what}` : `Photos similar to ${what}`) + floor;
}

function card(hit, index) {
  const li = document.createElement("li");
  const a = document.createElement("a");
  a.className = "card";
  a.href = `?${new URLSearchParams([...queryParams(), ["view", String(hit.id)]])}`;
  a.dataset.index = String(index);
  a.dataset.id = String(hit.id);
  a.title = hit.path;
  const img = document.createElement("img");
  img.src = hit.thumbnail_url;
  img.alt = hit.name;
  img.loading = "lazy";
  img.decoding = "async";
  img.width = 320;
  img.height = 320;
  img.addEventListener("error", () => imageFailed(img, hit.thumbnail_url), { once: true });
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score.toFixed(3);
  score.title = "similarity score";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = hit.name;
  a.append(img, score, name);
  a.addEventListener("click", (event) => {
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    openDetail(hit.id, { push: true });
  });
  li.append(a);
  return li;
}

export async function imageFailed(img, url) {
  img.classList.add("broken");
  const reason = await explainImageFailure(url);
  img.alt = `Preview unavailable: ${reason}`;
  img.title = img.alt;
}

function renderCaptions(captions, note) {
  const list = $("captions");
  list.replaceChildren();
  for (const c of captions) {
    const li = document.createElement("li");
    const text = document.createElement("span");
    text.className = "caption-text";
    text.textContent = c.text;
    const score = document.createElement("span");
    score.className = "score-inline";
    score.textContent = c.score.toFixed(3);
    li.append(text, score);
    list.append(li);
  }
  $("captions-note").textContent = note || "";
  $("captions-note").hidden = !note;
}

// ------------------------------------------------------------- keyboard
function moveFocus(event) {
  const cardEl = event.target.closest(".card");
  if (!cardEl) return;
  const cards = [...document.querySelectorAll("#results .card")];
  const i = cards.indexOf(cardEl);
  const top = cards[0].offsetTop;
  const perRow = Math.max(1, cards.filter((c) => c.offsetTop === top).length);
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: perRow, ArrowUp: -perRow }[event.key];
  if (step === undefined) return;
  const target = cards[Math.min(cards.length - 1, Math.max(0, i + step))];
  event.preventDefault();
  target.focus();
  if (i + step >= cards.length - perRow) loadPage();
}

function onGlobalKey(event) {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName);
  if (event.key === "/" && !typing && !isDetailOpen()) {
    event.preventDefault();
    $("q").focus();
    $("q").select();
  }
}

// -------------------------------------------------------- drag and paste
function initDrop() {
  const overlay = $("drop-overlay");
  let depth = 0;
  const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes("Files");
  document.addEventListener("dragenter", (e) => { if (hasFiles(e)) { depth++; overlay.hidden = false; } });
  document.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; overlay.hidden = true; } });
  document.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    overlay.hidden = true;
    const file = e.dataTransfer.files[0];
    if (file) startImage(file);
  });
  document.addEventListener("paste", (e) => {
    const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) { e.preventDefault(); startImage(file); }
  });
}

// ------------------------------------------------------------------ start
function init() {
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.min = null;  // a new search starts without a score floor
    startText($("q").value);
  });
  $("pick-image").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (file) startImage(file);
  });
  $("error-dismiss").addEventListener("click", clearError);
  $("more").addEventListener("click", loadPage);
  $("results").addEventListener("keydown", moveFocus);
  document.addEventListener("keydown", onGlobalKey);
  window.addEventListener("popstate", applyUrl);
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadPage();
  }, { rootMargin: "600px" }).observe($("more"));
  initDrop();
  initDetail({
    results: () => state.results,
    moreLikeThis: (id) => { state.min = null; startSimilar(id, true); },
    setUrl,
    showError,
    imageFailed,
  });
  applyUrl();   // the query in the address, if any, runs alongside the status call
  loadStatus();
  document.body.dataset.ready = "true";  // handlers bound (tests wait for this)
}

init();
