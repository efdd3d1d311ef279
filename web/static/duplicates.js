// The duplicates view: groups of exact and near-duplicate photos side by side,
// the threshold control (state in the URL: ?threshold=0.99&exact=1), and a
// compare dialog showing a copy next to the group's best file.

import { api, ApiError, explainImageFailure } from "./api.js";
import { formatBytes, formatDate } from "./detail.js";

const PAGE = 30;
const $ = (id) => document.getElementById(id);
const state = { threshold: 0.99, exact: false, next: 0, groups: [], generation: 0, loading: false };
let compare = null;  // { group, index } while the dialog is open
let reloadTimer = null;

// ------------------------------------------------------------------ URL
function readUrl() {
  const p = new URLSearchParams(location.search);
  const t = parseFloat(p.get("threshold") || "");
  if (Number.isFinite(t) && t >= 0.5 && t <= 1) state.threshold = t;
  state.exact = p.get("exact") === "1";
  $("threshold").value = String(Math.max(Number($("threshold").min), state.threshold));
  $("exact-only").checked = state.exact;
  showThreshold();
}

function writeUrl() {
  const p = new URLSearchParams();
  p.set("threshold", state.threshold.toFixed(3));
  if (state.exact) p.set("exact", "1");
  history.replaceState(null, "", `?${p}`);
}

function showThreshold() {
  $("threshold-value").textContent = state.threshold.toFixed(3);
  $("threshold").disabled = state.exact;
}

// -------------------------------------------------------------- loading
function restart() {
  state.generation++;
  state.next = 0;
  state.groups = [];
  $("groups").replaceChildren();
  $("message").hidden = true;
  $("error").hidden = true;
  writeUrl();
  return loadPage();
}

async function loadPage() {
  if (state.next === null || state.loading) return;
  const generation = state.generation;
  setLoading(true);
  const query = `threshold=${state.threshold}&exact_only=${state.exact}&offset=${state.next}&limit=${PAGE}`;
  try {
    const answer = await api(`/api/duplicates?${query}`);
    if (generation !== state.generation) return;
    state.next = answer.next_offset;
    render(answer);
  } catch (err) {
    if (generation !== state.generation) return;
    state.next = null;
    showError(err);
  } finally {
    if (generation === state.generation) setLoading(false);
  }
}

function setLoading(on) {
  state.loading = on;
  $("loading").hidden = !on;
  $("groups").setAttribute("aria-busy", String(on));
  $("more").hidden = on || state.next === null;
}

// ------------------------------------------------------------ rendering
function render(answer) {
  const start = state.groups.length;
  state.groups.push(...answer.groups);
  answer.groups.forEach((g, i) => $("groups").append(groupItem(g, start + i)));
  const what = state.exact ? "exact copies" : `similarity ≥ ${answer.threshold.toFixed(3)}`;
  if (answer.index_images === 0) {
    $("dup-heading").textContent = "";
    return message("This index has no photos yet.", "Index a folder first: sightline index ~/Pictures");
  }
  if (answer.total_groups === 0) {
    $("dup-heading").textContent = "No duplicates";
    return message(`No duplicates with ${what}.`, state.exact ? "Untick “Exact copies only” to look for near copies."
      : "Lower the similarity to find more distant copies.");
  }
  $("dup-heading").textContent = `${answer.total_groups.toLocaleString()} group${answer.total_groups === 1 ? "" : "s"} · `
    + `${answer.total_files.toLocaleString()} files · ${formatBytes(answer.reclaimable_bytes)} in the copies (${what})`;
}

function message(title, body) {
  const box = $("message");
  const h = document.createElement("p");
  h.className = "message-title";
  h.textContent = title;
  const p = document.createElement("p");
  p.textContent = body;
  box.replaceChildren(h, p);
  box.hidden = false;
}

function groupItem(group, index) {
  const li = document.createElement("li");
  li.className = "dup-group";
  li.dataset.index = String(index);
  const head = document.createElement("p");
  head.className = "dup-group-head";
  const kind = document.createElement("span");
  kind.className = `kind ${group.kind}`;
  kind.textContent = group.kind;
  const count = document.createElement("strong");
  count.textContent = `${group.file_count} files`;
  const score = document.createElement("span");
  score.textContent = group.kind === "exact" ? "identical content" : `linked at ≥ ${group.score.toFixed(4)}`;
  const bytes = document.createElement("span");
  bytes.textContent = `${formatBytes(group.reclaimable_bytes)} in the copies`;
  head.append(kind, count, score, bytes);
  const files = document.createElement("ul");
  files.className = "dup-files";
  group.files.forEach((f, i) => files.append(fileCard(group, f, i)));
  if (group.file_count > group.files.length) {
    const more = document.createElement("li");
    more.className = "more-files";
    more.textContent = `and ${group.file_count - group.files.length} more`;
    files.append(more);
  }
  li.append(head, files);
  return li;
}

function fileCard(group, file, i) {
  const li = document.createElement("li");
  li.className = i === 0 ? "dup-file best" : "dup-file";
  li.dataset.id = String(file.id);
  const button = document.createElement("button");
  button.type = "button";
  button.title = `Compare ${file.name} with the best copy`;
  const img = document.createElement("img");
  img.src = file.thumbnail_url;
  img.alt = file.name;
  img.loading = "lazy";
  img.width = 200;
  img.height = 150;
  img.addEventListener("error", () => imageFailed(img, file.thumbnail_url), { once: true });
  const facts = document.createElement("span");
  facts.className = "facts";
  const name = span("name", file.name);
  if (i === 0) name.prepend(span("badge", "Best"));
  facts.append(name, span("", `${file.width} × ${file.height} · ${formatBytes(file.size)}`),
    span("", file.taken_at ? `taken ${formatDate(file.taken_at)}` : "no capture time"),
    span("", i === 0 ? "kept first" : `similarity ${file.similarity.toFixed(4)}`), span("folder", file.folder));
  button.append(img, facts);
  button.addEventListener("click", () => openCompare(group, i));
  li.append(button);
  return li;
}

function span(cls, text) {
  const s = document.createElement("span");
  if (cls) s.className = cls;
  s.textContent = text;
  return s;
}

async function imageFailed(img, url) {
  img.classList.add("broken");
  img.alt = `Preview unavailable: ${await explainImageFailure(url)}`;
  img.title = img.alt;
}

// --------------------------------------------------------------- compare
function openCompare(group, index) {
  compare = { group, index: Math.max(1, Math.min(index, group.files.length - 1)) };
  if (group.files.length < 2) return;
  fillCompare();
  if (!$("compare").open) $("compare").showModal();
  $("compare-close").focus();
}

function fillCompare() {
  const { group, index } = compare;
  const best = group.files[0];
  const other = group.files[index];
  $("compare-title").textContent = `Best copy and copy ${index} of ${group.files.length - 1}`;
  side($("compare-left"), best, best, "Best copy");
  side($("compare-right"), other, best, group.kind === "exact" ? "Identical copy" : `Similarity ${other.similarity.toFixed(4)}`);
  $("compare-prev").disabled = index <= 1;
  $("compare-next").disabled = index >= group.files.length - 1;
}

function side(figure, file, best, label) {
  const img = document.createElement("img");
  img.src = file.preview_url;
  img.alt = file.name;
  img.addEventListener("error", () => imageFailed(img, file.preview_url), { once: true });
  const caption = document.createElement("figcaption");
  const title = document.createElement("strong");
  title.textContent = `${label}: ${file.name}`;
  const path = document.createElement("p");
  path.className = "path";
  path.textContent = file.path;
  const meta = document.createElement("dl");
  meta.className = "meta";
  const rows = [["Dimensions", `${file.width} × ${file.height}`, `${best.width} × ${best.height}`],
    ["File size", formatBytes(file.size), formatBytes(best.size)], ["Format", file.format, best.format],
    ["Taken", formatDate(file.taken_at) || "unknown", formatDate(best.taken_at) || "unknown"],
    ["Folder", file.folder, best.folder], ["Id", String(file.id), null]];
  for (const [label_, value, bestValue] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = label_;
    const dd = document.createElement("dd");
    dd.textContent = value ?? "–";
    if (file !== best && bestValue !== null && value !== bestValue) dd.className = "differs";
    meta.append(dt, dd);
  }
  const open = document.createElement("a");
  open.className = "button secondary";
  open.href = file.file_url;
  open.target = "_blank";
  open.rel = "noopener";
  open.textContent = "Open original";
  caption.append(title, path, meta, open);
  figure.replaceChildren(img, caption);
}

function step(delta) {
  if (!compare) return;
  const next = compare.index + delta;
  if (next >= 1 && next < compare.group.files.length) {
    compare.index = next;
    fillCompare();
  }
}

// ---------------------------------------------------------------- misc
function showError(err) {
  const known = err instanceof ApiError;
  $("error-title").textContent = known && err.status ? `Error ${err.status} (${err.type}):` : "Error:";
  $("error-message").textContent = err.message || String(err);
  $("error").hidden = false;
}

async function loadStatus() {
  try {
    const s = await api("/api/status");
    $("index-status").textContent = `${s.images.toLocaleString()} photo${s.images === 1 ? "" : "s"}`;
  } catch (err) {
    showError(err);
  }
}

function init() {
  readUrl();
  $("threshold").addEventListener("input", () => {
    state.threshold = Number($("threshold").value);
    showThreshold();
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(restart, 250);  // one request when the slider comes to rest
  });
  $("exact-only").addEventListener("change", () => {
    state.exact = $("exact-only").checked;
    showThreshold();
    restart();
  });
  $("dup-controls").addEventListener("submit", (e) => e.preventDefault());
  $("more").addEventListener("click", loadPage);
  $("error-dismiss").addEventListener("click", () => { $("error").hidden = true; });
  $("compare-close").addEventListener("click", () => $("compare").close());
  $("compare-prev").addEventListener("click", () => step(-1));
  $("compare-next").addEventListener("click", () => step(1));
  $("compare").addEventListener("keydown", (e) => {
    if (e.key === "ArrowLeft") { e.preventDefault(); step(-1); }
    if (e.key === "ArrowRight") { e.preventDefault(); step(1); }
  });
  $("compare").addEventListener("click", (e) => { if (e.target === $("compare")) $("compare").close(); });
  $("compare").addEventListener("close", () => {
    const card = compare && document.querySelector(`.dup-file[data-id="${compare.group.files[compare.index].id}"] button`);
    compare = null;
    if (card) card.focus();
  });
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadPage();
  }, { rootMargin: "600px" }).observe($("more"));
  loadStatus();
  restart();
  document.body.dataset.ready = "true";
}

init();
