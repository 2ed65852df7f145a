// DOM helpers shared by the screens: element building, tables, the error banner, confirmations.

// el("tag.class#id", {attributes, on: {event: handler}}, ...children); text children are text nodes,
// never parsed as HTML (API answers are shown as data).
export function el(spec, attributes = {}, ...children) {
  const [, tag, rest] = spec.match(/^([a-z0-9-]+)(.*)$/);
  const node = document.createElement(tag);
  for (const [, kind, name] of rest.matchAll(/([.#])([^.#]+)/g)) {
    if (kind === ".") node.classList.add(name);
    else node.id = name;
  }
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else if (value !== false && value !== null && value !== undefined) {
      node.setAttribute(name, value);
    }
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false).map((c) =>
    c instanceof Node ? c : document.createTextNode(String(c))));
  return node;
}

// A table: `columns` are [heading, row => cell content]; `rowAttributes(row)` sets each <tr>'s.
export function table(columns, rows, { rowAttributes = () => ({}), empty = "Nothing to show." } = {}) {
  if (!rows.length) return el("p.empty", {}, empty);
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map(([heading]) => el("th", {}, heading)))),
    el("tbody", {}, rows.map((row) => el("tr", rowAttributes(row), columns.map(([, cell]) => el("td", {}, cell(row)))))));
}

// Key / value pairs as a definition list.
export function facts(pairs) {
  return el("dl.facts", {}, pairs.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value ?? "—")]));
}

export function showError(error) {
  const where = error.status ? `HTTP ${error.status} ${error.code}` : error.code || "error";
  showBanner(`${error.message} (${where})`, "error");
}

export function showBanner(text, kind = "info") {
  const banner = document.getElementById("banner");
  document.getElementById("banner-text").textContent = text;
  banner.className = `banner ${kind}`;
  banner.hidden = false;
}

export function clearBanner() {
  document.getElementById("banner").hidden = true;
}

// A confirmation to show once the screen navigated to has been drawn (navigation clears the banner).
let flashed = null;

export function flashAfterRoute(text) {
  flashed = text;
}

export function showFlash() {
  if (flashed !== null) showBanner(flashed, "ok");
  flashed = null;
}

// Run an action that calls the API; any failure goes to the banner, never lost. `button` is
// disabled while it runs. Resolves true if the action succeeded.
export async function attempt(action, button) {
  if (button) button.disabled = true;
  try {
    clearBanner();
    await action();
    return true;
  } catch (error) {
    showError(error);
    return false;
  } finally {
    if (button) button.disabled = false;
  }
}

// Ask before an erasure; resolves true only on the explicit confirm button.
export function confirmErase(title, text, confirmLabel) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = confirmLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

export function when(unixSeconds) {
  if (unixSeconds === null || unixSeconds === undefined) return "—";
  return new Date(unixSeconds * 1000).toLocaleString(undefined, { hour12: false });
}

export function number(value, digits = 3) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
}

// A pager for offset/limit listings: "Previous", "a–b of total", "Next".
export function pager(offset, limit, total, go) {
  if (!total) return el("div.pager");
  const last = Math.min(offset + limit, total);
  return el("div.pager", {},
    el("button", { type: "button", disabled: offset === 0, on: { click: () => go(Math.max(0, offset - limit)) } }, "Previous"),
    el("span", {}, `${offset + 1}–${last} of ${total}`),
    el("button", { type: "button", disabled: last >= total, on: { click: () => go(offset + limit) } }, "Next"));
}

// The operation groups the signed-in key's role may call (from GET /keys/me).
export function may(me, group) {
  return me.grants.includes(group);
}

// The galleries a key may use, for pickers: its own list, or (any gallery) what the admin list
// gives, else `default` and whatever the operator types.
export function galleryChoices(me, listed) {
  if (me.galleries !== "*") return me.galleries;
  return listed && listed.length ? listed : ["default"];
}
