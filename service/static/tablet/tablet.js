// The store tablet: find a customer, show the profile, record an offer presentation.
// Plain JS, no build step. The API key lives in sessionStorage only.
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = ["#0b6e4f", "#2e90fa", "#f79009", "#9e77ed", "#ee46bc", "#667085", "#15b79e", "#f04438"];
const CHANNEL_NAMES = { web: "Web", app: "App", email: "Email", store: "Store", tablet: "Tablet", social: "Social", support: "Support", unknown: "Other" };
let searchSerial = 0; // only the latest search may fill the screen
let current = null;   // { customerId, offerId }

function key() { return sessionStorage.getItem("tablet-key"); }
function storeId() { return $("store-id").value.trim() || null; }

class ApiError extends Error {
  constructor(status, problem) { super(problem.detail || problem.title || `HTTP ${status}`); this.status = status; }
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { "X-API-Key": key() || "", "content-type": "application/json", ...(options.headers || {}) },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function say(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind === "info" ? "info" : "";
  box.hidden = !text;
}

function showKeyForm(reason) {
  $("key-panel").hidden = false;
  $("forget-key").hidden = true;
  if (reason) say(reason);
}

function clearProfile() {
  $("profile").hidden = true;
  current = null;
  for (const id of ["customer-id", "stage", "identifiers", "consent", "ltv", "orders", "aov", "idle", "interval", "favourites", "purchases", "recommendations", "offer", "channel-chart", "spend-chart"]) {
    $(id).textContent = "";
  }
}

const money = (v) => (v === null || v === undefined ? "–" : v.toLocaleString(undefined, { style: "currency", currency: "EUR" }));
const days = (v) => (v === null || v === undefined ? "–" : v < 1 ? "today" : `${Math.round(v)} days ago`);

function text(tag, content, cls) {
  const el = document.createElement(tag);
  el.textContent = content;
  if (cls) el.className = cls;
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function donut(container, parts) {
  const total = parts.reduce((s, p) => s + p.value, 0);
  const root = svg("svg", { viewBox: "0 0 220 120", role: "img", "aria-label": "Channel mix" });
  let angle = -Math.PI / 2;
  parts.forEach((p, i) => {
    const share = total ? p.value / total : 0;
    const end = angle + share * 2 * Math.PI;
    const large = share > 0.5 ? 1 : 0;
    const [x1, y1, x2, y2] = [60 + 50 * Math.cos(angle), 60 + 50 * Math.sin(angle), 60 + 50 * Math.cos(end - 1e-6), 60 + 50 * Math.sin(end - 1e-6)];
    const path = share >= 0.999 ? svg("circle", { cx: 60, cy: 60, r: 50, fill: COLOURS[i % COLOURS.length] })
      : svg("path", { d: `M60 60 L${x1} ${y1} A50 50 0 ${large} 1 ${x2} ${y2} Z`, fill: COLOURS[i % COLOURS.length] });
    path.appendChild(svg("title", {})).textContent = `${p.label}: ${Math.round(share * 100)}%`;
    root.appendChild(path);
    angle = end;
  });
  root.appendChild(svg("circle", { cx: 60, cy: 60, r: 28, fill: "#fff" }));
  parts.forEach((p, i) => {
    const y = 18 + i * 20;
    root.appendChild(svg("rect", { x: 128, y: y - 10, width: 12, height: 12, rx: 3, fill: COLOURS[i % COLOURS.length] }));
    root.appendChild(svg("text", { x: 146, y, "font-size": 12 })).textContent = `${p.label} ${total ? Math.round((p.value / total) * 100) : 0}%`;
  });
  container.appendChild(root);
}

function bars(container, series) {
  const root = svg("svg", { viewBox: "0 0 320 130", role: "img", "aria-label": "Spend per month" });
  const max = Math.max(1, ...series.map((s) => s.spend));
  const width = Math.min(40, 300 / Math.max(series.length, 1));
  series.forEach((s, i) => {
    const h = Math.max(0, (s.spend / max) * 95);
    const x = 10 + i * width;
    const bar = root.appendChild(svg("rect", { x, y: 105 - h, width: width - 6, height: h, rx: 3, fill: "#0b6e4f" }));
    bar.appendChild(svg("title", {})).textContent = `${s.month}: ${money(s.spend)}`;
    root.appendChild(svg("text", { x: x + (width - 6) / 2, y: 122, "font-size": 10, "text-anchor": "middle" })).textContent = s.month.slice(2);
  });
  if (!series.length) root.appendChild(svg("text", { x: 160, y: 65, "text-anchor": "middle", "font-size": 13 })).textContent = "No purchases yet";
  container.appendChild(root);
}

function renderProfile(p, offer) {
  $("customer-id").textContent = p.customer_id;
  $("stage").textContent = p.stage;
  $("churn").hidden = !p.churn_risk;
  $("identifiers").textContent = p.identifiers.join(" · ");
  const c = p.consent || {};
  const marketing = Object.entries(c.marketing || {}).map(([ch, ok]) => `${ch} ${ok ? "yes" : "no"}`).join(", ");
  $("consent").textContent = `Personalisation: ${c.personalisation === false ? "no" : c.personalisation ? "yes" : "not stated"}` + (marketing ? ` · Marketing: ${marketing}` : "");
  $("ltv").textContent = money(p.lifetime_value);
  $("orders").textContent = p.order_count;
  $("aov").textContent = money(p.average_order_value);
  $("idle").textContent = days(p.days_since_last_activity);
  $("interval").textContent = p.usual_purchase_interval_days ? `${Math.round(p.usual_purchase_interval_days)} days` : "–";
  donut($("channel-chart"), p.channel_mix.map((m) => ({ label: CHANNEL_NAMES[m.channel] || m.channel, value: m.events })));
  bars($("spend-chart"), p.spend_by_month.slice(-8));
  const fav = $("favourites");
  fav.className = "chips";
  [...p.favourite_categories, ...p.favourite_brands].forEach((f) => fav.appendChild(text("span", f)));
  if (!fav.childElementCount) fav.textContent = "Not enough history yet";
  const purchases = $("purchases");
  const table = document.createElement("table");
  for (const [channel, lines] of Object.entries(p.recent_purchases)) {
    for (const line of lines) {
      const row = table.insertRow();
      row.insertCell().textContent = CHANNEL_NAMES[channel] || channel;
      row.insertCell().textContent = line.title || line.item_id;
      row.insertCell().textContent = line.timestamp ? new Date(line.timestamp).toLocaleDateString() : "";
    }
  }
  if (table.rows.length) purchases.appendChild(table); else purchases.textContent = "No recent purchases";
  const list = $("recommendations");
  for (const item of p.recommendations) {
    const li = document.createElement("li");
    li.appendChild(text("strong", item.item_id));
    if (item.category) li.appendChild(text("small", item.category));
    if (item.reason) li.appendChild(text("div", item.reason));
    list.appendChild(li);
  }
  if (!p.recommendations.length) list.appendChild(text("li", storeId() ? "Nothing suitable in stock in this store" : "No recommendations"));
  renderOffer(offer);
  $("profile").hidden = false;
}

function renderOffer(offer) {
  $("offer-panel").hidden = !offer;
  $("presented").disabled = false;
  $("presented-note").hidden = true;
  if (!offer) return;
  current.offerId = offer.offer_id;
  const box = $("offer");
  box.appendChild(text("strong", offer.title || offer.offer_id));
  if (offer.reason) box.appendChild(text("p", offer.reason, "muted"));
}

async function search(event) {
  event.preventDefault();
  const serial = ++searchSerial;
  clearProfile();
  say("");
  const kind = document.querySelector("input[name=kind]:checked").value;
  const value = $("query").value.trim();
  if (!value) return;
  $("search-button").disabled = true;
  try {
    const params = new URLSearchParams({ [kind]: value });
    if (storeId()) params.set("store_id", storeId());
    const found = await api(`/v1/customers/lookup?${params}`);
    const profileParams = new URLSearchParams(storeId() ? { store_id: storeId() } : {});
    const profile = await api(`/v1/customers/${encodeURIComponent(found.customer_id)}/profile?${profileParams}`);
    if (serial !== searchSerial) return; // a newer search started: never show a stale customer
    current = { customerId: found.customer_id, offerId: null };
    renderProfile(profile, profile.best_offer);
  } catch (e) {
    if (serial !== searchSerial) return;
    if (e.status === 401) showKeyForm("The key was not accepted. Enter the tablet key again.");
    else if (e.status === 403) say("This key may not look customers up. Ask for a tablet key.");
    else if (e.status === 404) say(`No customer found for this ${kind === "loyalty" ? "card" : kind}. Check it and try again.`);
    else if (e.status === 400) say(e.message);
    else say("Something went wrong; please try again. " + e.message);
  } finally {
    $("search-button").disabled = false;
  }
}

async function presented() {
  if (!current || !current.offerId) return;
  $("presented").disabled = true;
  try {
    await api(`/v1/customers/${encodeURIComponent(current.customerId)}/presentations`, {
      method: "POST", body: JSON.stringify({ offer_id: current.offerId, store_id: storeId() }),
    });
    $("presented-note").textContent = "Recorded. Other channels will not repeat this offer.";
    $("presented-note").hidden = false;
  } catch (e) {
    $("presented").disabled = false;
    say("Could not record the presentation: " + e.message);
  }
}

function init() {
  $("store-id").value = localStorage.getItem("tablet-store") || "";
  $("store-id").addEventListener("change", () => localStorage.setItem("tablet-store", $("store-id").value.trim()));
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("tablet-key", $("key").value.trim());
    $("key").value = "";
    $("key-panel").hidden = true;
    $("forget-key").hidden = false;
    say("");
  });
  $("forget-key").addEventListener("click", () => { sessionStorage.removeItem("tablet-key"); clearProfile(); showKeyForm(); });
  $("search-form").addEventListener("submit", search);
  $("presented").addEventListener("click", presented);
  document.querySelectorAll("input[name=kind]").forEach((r) => r.addEventListener("change", () => {
    $("query").placeholder = { loyalty: "Scan or type the card number", email: "Email address", phone: "Phone number" }[r.value];
  }));
  if (key()) $("forget-key").hidden = false; else showKeyForm();
}

init();
