// ponder trace viewer: three views (trace list, one trace, spend) routed by the URL hash.
// Every piece of model or user text goes into the page as a text node (el() below), never
// as markup, so a thought that contains <script> is shown, not run.
"use strict";

const PAGE = 50;
const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
const WRITTEN = ["sample", "revision", "step", "critique"]; // thoughts worth comparing side by side
let route = 0; // bumped on navigation so a stale poll stops itself

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = String(value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

// A server started with --api-key guards its data (the page itself is open): ask for the
// key once, keep it for this tab only, and send it as a Bearer token like any API client.
async function api(path, asked = false) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem("ponder-key");
  if (key) headers.Authorization = "Bearer " + key;
  const response = await fetch("ui/api/" + path, { headers });
  if (response.status === 401 && !asked) {
    const given = window.prompt("This ponder server needs its API key:");
    if (given) {
      sessionStorage.setItem("ponder-key", given.trim());
      return api(path, true);
    }
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || body.detail; // the viewer's {"error": text}, a server's {"error": {"message"}}
    throw new Error((error && error.message) || error || response.statusText);
  }
  return body;
}

const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const secs = (s) => (s === null || s === undefined ? "–" : Number(s).toFixed(1) + " s");
const usd = (d) => (d === null || d === undefined ? "–" : "$" + Number(d).toFixed(4));
const pct = (x) => (x === null || x === undefined ? "–" : Math.round(x * 100) + "%");
function when(epoch) {
  const d = new Date(epoch * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}`;
}
const short = (text, width) => {
  const flat = String(text || "").split(/\s+/).join(" ").trim();
  return flat.length <= width ? flat : flat.slice(0, width - 1) + "…";
};
const verdictMark = (ok) => (ok === true ? el("span", { class: "ok", title: "correct" }, "✓ correct")
  : ok === false ? el("span", { class: "bad", title: "incorrect" }, "✗ wrong") : el("span", { class: "muted" }, "–"));
const statusBadge = (status) => el("span", { class: "status s-" + status }, status);
const tokenSplit = (t) => (t ? `${num(t.prompt)} / ${num(t.reasoning)} / ${num(t.answer)}` : "–");

const present = (items) => items.flat(Infinity).filter((x) => x !== null && x !== undefined && x !== false);

function show(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...present(children));
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || "") };
}

async function render() {
  route += 1;
  const { parts, params } = parseHash();
  document.getElementById("nav-usage").classList.toggle("here", parts[0] === "usage");
  document.getElementById("nav-traces").classList.toggle("here", parts[0] !== "usage");
  try {
    if (parts[0] === "trace" && parts[1]) await traceView(parts[1], route);
    else if (parts[0] === "usage") await usageView(params);
    else await listView(params);
  } catch (error) {
    show(el("p", { class: "error" }, "Could not load: " + error.message));
  }
}

// ---- the trace list ---------------------------------------------------------------------

async function listView(params) {
  const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  const filters = { text: params.get("text") || "", strategy: params.get("strategy") || "", status: params.get("status") || "" };
  const query = new URLSearchParams({ limit: PAGE, offset: (page - 1) * PAGE });
  for (const [k, v] of Object.entries(filters)) if (v) query.set(k, v);
  const [data, names] = await Promise.all([api("traces?" + query), api("strategies")]);
  const pages = Math.max(1, Math.ceil(data.total / PAGE));
  const go = (changes) => {
    const next = new URLSearchParams({ ...filters, page, ...changes });
    for (const [k, v] of [...next]) if (!v || (k === "page" && v === "1")) next.delete(k);
    location.hash = "#/?" + next;
  };
  const text = el("input", { id: "f-text", type: "search", placeholder: "question or answer contains…", value: filters.text });
  const options = (values, chosen, none) =>
    [el("option", { value: "" }, none), ...values.map((v) => el("option", { value: v, selected: v === chosen }, v))];
  const strategy = el("select", { id: "f-strategy" }, options(names.strategies, filters.strategy, "any strategy"));
  const status = el("select", { id: "f-status" }, options(names.statuses, filters.status, "any status"));
  const form = el("form", {
    class: "filters",
    onsubmit: (e) => { e.preventDefault(); go({ text: text.value.trim(), strategy: strategy.value, status: status.value, page: 1 }); },
  }, text, strategy, status, el("button", { type: "submit", id: "f-go" }, "Filter"));
  strategy.addEventListener("change", () => form.requestSubmit());
  status.addEventListener("change", () => form.requestSubmit());
  const first = data.total ? data.offset + 1 : 0;
  const pager = el("div", { class: "pager" },
    el("button", { id: "prev", disabled: page <= 1, onclick: () => go({ page: page - 1 }) }, "‹ newer"),
    el("span", { id: "count" }, `${num(first)}–${num(data.offset + data.rows.length)} of ${num(data.total)} traces · page ${num(page)} of ${num(pages)}`),
    el("button", { id: "next", disabled: page >= pages, onclick: () => go({ page: page + 1 }) }, "older ›"),
    el("button", { id: "last", disabled: page >= pages, onclick: () => go({ page: pages }) }, "oldest »"));
  const head = ["date", "question", "strategy", "answer", "correct", "tokens p / r / a", "time", "cost", "status"];
  const rows = data.rows.map((r) => el("tr", { class: "trace-row", "data-id": r.id },
    el("td", { class: "nowrap" }, when(r.created_at)),
    el("td", {}, el("a", { href: "#/trace/" + encodeURIComponent(r.id), class: "question" }, short(r.question, 90))),
    el("td", { class: "mono nowrap" }, short(r.strategy, 28)),
    el("td", { class: "mono answer" }, short(r.answer ?? "–", 24)),
    el("td", { class: "nowrap" }, verdictMark(r.correct)),
    el("td", { class: "num" }, tokenSplit(r.tokens)),
    el("td", { class: "num" }, secs(r.seconds)),
    el("td", { class: "num" }, usd(r.usd)),
    el("td", {}, statusBadge(r.status))));
  const table = rows.length
    ? el("table", { class: "traces" }, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))), el("tbody", {}, rows))
    : el("p", { class: "muted", id: "empty" }, "No traces match.");
  show(el("h1", {}, "Traces"), form, pager, table);
}

// ---- one trace --------------------------------------------------------------------------

async function traceView(id, myRoute) {
  const trace = await api("traces/" + encodeURIComponent(id));
  const nodes = new Map(trace.nodes.map((n) => [n.id, n]));
  const views = new Map(); // node id -> {box, summary, body, children}
  const header = el("section", { id: "summary" });
  const chart = el("section", { id: "chart" });
  const tally = el("section", { id: "tally" });
  const compare = el("section", { id: "compare" });
  const tree = el("div", { id: "tree" });
  const toggleAll = (open) => tree.querySelectorAll("details.node").forEach((d) => { d.open = open; });
  show(
    el("p", {}, el("a", { href: "#/" }, "‹ all traces")), header,
    el("div", { class: "panels" }, chart, tally),
    el("section", { id: "thoughts" }, el("h2", {}, "Thoughts"),
      el("div", { class: "tools" },
        el("button", { id: "expand-all", onclick: () => toggleAll(true) }, "expand all"),
        el("button", { id: "collapse-all", onclick: () => toggleAll(false) }, "collapse all")),
      tree),
    compare);

  // Redraw only what changed: a node's own box (so a prompt the reader opened stays open),
  // the tally when a vote moved, the side-by-side when a written thought did.
  function refresh(changed) {
    const sorted = [...nodes.values()].sort((a, b) => a.seq - b.seq);
    for (const node of changed.sort((a, b) => a.seq - b.seq)) place(node);
    for (const node of sorted) adopt(node);
    drawHeader(header, trace, sorted);
    drawChart(chart, trace, sorted);
    if (changed.some((n) => n.kind === "vote") || !tally.firstChild) drawTally(tally, sorted);
    if (changed.some((n) => WRITTEN.includes(n.kind)) || !compare.firstChild) drawCompare(compare, sorted);
  }

  function place(node) {
    let view = views.get(node.id);
    if (!view) {
      view = { summary: el("summary"), body: el("div", { class: "body" }), children: el("div", { class: "children" }) };
      view.box = el("details", { class: "node k-" + node.kind, "data-id": node.id, "data-kind": node.kind, open: node.kind === "root" },
        view.summary, view.body, view.children);
      views.set(node.id, view);
      tree.append(view.box);
    }
    const promptOpen = Boolean(view.body.querySelector("details.prompt[open]"));
    view.summary.replaceChildren(...nodeSummary(node));
    view.body.replaceChildren(...nodeBody(node, trace.prompts));
    if (promptOpen) view.body.querySelector("details.prompt").open = true;
    view.box.classList.toggle("open-node", Boolean(node.meta && node.meta.open));
  }

  function adopt(node) { // under its parent once the parent is on the page
    const view = views.get(node.id), parent = views.get(node.parent_id);
    if (parent && view.box.parentElement !== parent.children) parent.children.append(view.box);
  }

  refresh([...nodes.values()]);
  if (trace.status !== "running") return;
  while (myRoute === route) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    if (myRoute !== route) return;
    let update;
    try {
      update = await api(`traces/${encodeURIComponent(trace.id)}/updates?after=${trace.version}`);
    } catch (error) {
      continue; // a busy store or a restart: try again next tick
    }
    if (myRoute !== route) return;
    for (const node of update.nodes) nodes.set(node.id, node);
    Object.assign(trace, update, { nodes: undefined });
    refresh(update.nodes);
    if (update.status !== "running") return;
  }
}

function drawHeader(box, t, nodes) {
  // Until the trace closes its usage, what its nodes hold so far (no answer shown yet).
  const sum = (key) => nodes.reduce((total, n) => total + n[key], 0);
  const tokens = t.tokens ? tokenSplit(t.tokens) : `${num(sum("prompt_tokens"))} / ${num(sum("completion_tokens"))} / – so far`;
  const time = t.usage ? secs(t.usage.seconds) : t.status === "running" ? secs(Date.now() / 1000 - t.created_at) + " so far" : "–";
  const facts = [
    ["strategy", t.strategy], ["model", t.model], ["answer", t.answer ?? "–"],
    ["tokens prompt / reasoning / answer", tokens], ["time", time],
    ["cost", usd(t.usage ? t.usage.usd : null)], ["budget", budgetText(t.budget)], ["started", when(t.created_at)],
  ];
  if (t.stopped_by) facts.push(["stopped by", t.stopped_by]);
  if (t.problem && t.problem.gold !== undefined) facts.push(["gold", t.problem.gold]);
  box.replaceChildren(...present([
    el("h1", { id: "question" }, t.question),
    el("p", {}, statusBadge(t.status), " ", verdictMark(t.correct), " ", el("span", { class: "mono muted" }, t.id)),
    el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", { class: "mono" }, v)])),
    t.error ? el("p", { class: "error" }, t.error) : null,
    t.problem && (t.problem.system || (t.problem.history || []).length)
      ? el("details", {}, el("summary", {}, "conversation before the question"),
        el("pre", {}, [t.problem.system ? "system: " + t.problem.system : null,
          ...(t.problem.history || []).map((m) => `${m.role}: ${m.content}`)].filter(Boolean).join("\n\n")))
      : null]));
}

function budgetText(b) {
  const parts = [];
  if (b.seconds) parts.push(b.seconds + " s");
  if (b.tokens) parts.push(num(b.tokens) + " tokens");
  if (b.usd) parts.push("$" + b.usd);
  if (b.samples) parts.push(b.samples + " samples");
  return parts.join(", ") || "no limit";
}

function nodeSummary(n) {
  const bits = [el("span", { class: "kind" }, n.kind)];
  if (n.meta.greedy) bits.push(el("span", { class: "tag" }, "greedy"));
  if (n.meta.open) bits.push(el("span", { class: "tag live" }, "writing…"));
  if (n.kind === "verdict" && n.meta.passed !== undefined)
    bits.push(el("span", { class: n.meta.passed ? "ok" : "bad" }, n.meta.passed ? "passed" : "failed"));
  if (n.kind === "decision" && n.meta.choice) bits.push(el("span", { class: "tag" }, "→ " + n.meta.choice));
  if (n.answer !== null && n.answer !== undefined) bits.push(el("span", { class: "answer mono" }, "→ " + short(n.answer, 30)));
  if (n.score !== null && n.score !== undefined) bits.push(el("span", { class: "muted" }, "score " + Number(n.score).toFixed(2)));
  if (n.completion_tokens || n.prompt_tokens) bits.push(el("span", { class: "muted" }, `${num(n.prompt_tokens)}+${num(n.completion_tokens)} tok`));
  if (n.seconds) bits.push(el("span", { class: "muted" }, secs(n.seconds)));
  if (n.meta.finish_reason && n.meta.finish_reason !== "stop") bits.push(el("span", { class: "warn" }, n.meta.finish_reason));
  if (n.kind !== "root" && n.text) bits.push(el("span", { class: "preview" }, short(n.text, 80)));
  return bits;
}

function nodeBody(n, prompts) {
  const parts = [];
  const prompt = n.meta.prompt !== undefined ? prompts[n.meta.prompt] : undefined;
  if (prompt) parts.push(el("details", { class: "prompt" }, el("summary", {}, "prompt as sent"), el("pre", {}, promptText(prompt))));
  if (n.kind === "verdict") parts.push(el("p", {}, `verifier ${n.meta.verifier || "?"}: `, el("strong", {}, n.meta.passed ? "passed" : "failed")));
  if (n.text) parts.push(el("pre", { class: "text" }, n.text));
  if (n.meta.feedback) parts.push(el("p", { class: "muted" }, "feedback it answered: "), el("pre", {}, n.meta.feedback));
  if (n.kind === "decision" && n.meta.signals)
    parts.push(el("table", { class: "signals" }, Object.entries(n.meta.signals).map(([k, v]) =>
      el("tr", {}, el("th", {}, k), el("td", { class: "mono" }, typeof v === "number" ? Number(v.toFixed(4)) : String(v))))));
  const rest = Object.entries(n.meta).filter(([k]) => !["prompt", "feedback", "signals", "totals", "open"].includes(k));
  if (rest.length) parts.push(el("p", { class: "meta mono" }, rest.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join("  ")));
  return parts;
}

function promptText(p) {
  const settings = Object.entries(p).filter(([k, v]) => !["messages", "prompt", "rendered"].includes(k) && v !== null)
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ");
  const body = p.messages ? p.messages.map((m) => `[${m.role}]\n${m.content}`).join("\n\n") : String(p.prompt ?? "");
  return body + (p.prefill ? "\n[prefill] " + p.prefill : "") + "\n\n— " + settings;
}

function drawTally(box, nodes) {
  const votes = nodes.filter((n) => n.kind === "vote" && n.meta.totals);
  if (!votes.length) { box.replaceChildren(el("h2", {}, "Vote"), el("p", { class: "muted" }, "No vote in this trace.")); return; }
  const last = votes[votes.length - 1];
  const entries = Object.entries(last.meta.totals).sort((a, b) => b[1] - a[1]);
  const top = Math.max(...entries.map((e) => e[1]), 1e-9);
  box.replaceChildren(el("h2", {}, "Vote tally"),
    el("table", { class: "tally" }, entries.map(([answer, count]) => {
      const bar = el("div", { class: "bar" + (answer === last.answer ? " winner" : "") });
      bar.style.width = Math.round((count / top) * 100) + "%";
      return el("tr", { class: "tally-row" }, el("td", { class: "mono" }, short(answer, 30)),
        el("td", { class: "barcell" }, bar), el("td", { class: "num" }, Number(count.toFixed(3))));
    })),
    el("p", { class: "muted" }, `${last.meta.voters ?? entries.length} voters` + (votes.length > 1 ? ` · last of ${votes.length} votes` : "")));
}

function drawChart(box, trace, nodes) {
  // Budget burn-down: the share of each limit left over time. Tokens step down as samples
  // finish; seconds fall in a straight line. A node records when it was written first
  // (its first token, or its end when it came whole) and its request's seconds, not when it
  // ended: its end is taken as the later of that first write and the trace's start plus its
  // seconds (exact for samples sent at the start or written whole, never before the first write).
  const start = trace.created_at;
  const endOf = (n) => Math.max(n.created_at - start, n.seconds);
  const steps = nodes.filter((n) => n.completion_tokens > 0).map((n) => [endOf(n), n.completion_tokens]).sort((a, b) => a[0] - b[0]);
  const used = steps.reduce((s, [, c]) => s + c, 0);
  const finished = trace.usage && trace.usage.seconds !== undefined ? trace.usage.seconds : null;
  const elapsed = finished ?? Math.max(0, Date.now() / 1000 - start, ...steps.map((s) => s[0]));
  const limits = trace.budget || {};
  const span = Math.max(elapsed, limits.seconds || 0, 1e-3);
  const W = 480, H = 200, L = 44, R = 10, T = 12, B = 28;
  const x = (t) => L + (Math.min(t, span) / span) * (W - L - R);
  const y = (share) => T + (1 - share) * (H - T - B);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "burn", role: "img", "aria-label": "budget burn-down" });
  for (const share of [0, 0.5, 1]) {
    chart.append(svg("line", { x1: L, x2: W - R, y1: y(share), y2: y(share), class: "grid" }));
    chart.append(svg("text", { x: L - 6, y: y(share) + 4, class: "axis", "text-anchor": "end" }, pct(share)));
  }
  chart.append(svg("text", { x: W - R, y: H - 6, class: "axis", "text-anchor": "end" }, secs(span)));
  chart.append(svg("text", { x: L, y: H - 6, class: "axis" }, "0 s"));
  const tokenLimit = limits.tokens || used || 1;
  let left = 1, d = `M${x(0)},${y(1)}`;
  for (const [t, c] of steps) {
    left = Math.max(0, left - c / tokenLimit);
    d += ` H${x(t)} V${y(left)}`;
  }
  d += ` H${x(elapsed)}`;
  chart.append(svg("path", { d, class: "line tokens" }));
  if (limits.seconds) chart.append(svg("path", { d: `M${x(0)},${y(1)} L${x(elapsed)},${y(Math.max(0, 1 - elapsed / limits.seconds))}`, class: "line seconds" }));
  const legend = el("p", { class: "legend" },
    el("span", { class: "key tokens" }, "tokens: " + (limits.tokens ? `${num(used)} of ${num(limits.tokens)} generated` : `${num(used)} generated, no limit (drawn against the total)`)),
    el("span", { class: "key seconds" }, "seconds: " + (limits.seconds ? `${secs(elapsed)} of ${secs(limits.seconds)}` : `${secs(elapsed)}, no limit`)));
  box.replaceChildren(el("h2", {}, "Budget burn-down"), chart, legend);
}

function drawCompare(box, nodes) {
  const written = nodes.filter((n) => WRITTEN.includes(n.kind));
  if (written.length < 2) { box.replaceChildren(); return; }
  const label = (n) => `#${n.seq} ${n.kind}${n.meta.greedy ? " (greedy)" : ""} → ${short(n.answer ?? "–", 20)}`;
  const pick = (id, chosen) => el("select", { id }, written.map((n) => el("option", { value: n.id, selected: n.id === chosen }, label(n))));
  const old = [box.querySelector("#cmp-a"), box.querySelector("#cmp-b")].map((s) => (s ? s.value : null));
  const samples = written.filter((n) => n.kind === "sample");
  const [first, second] = samples.length >= 2 ? samples : written;
  const a = pick("cmp-a", old[0] || first.id), b = pick("cmp-b", old[1] || second.id);
  const side = (select) => { const n = written.find((w) => w.id === select.value) || written[0]; return el("div", { class: "side" }, el("pre", {}, n.text)); };
  const columns = el("div", { class: "sides" });
  const fill = () => columns.replaceChildren(side(a), side(b));
  a.addEventListener("change", fill); b.addEventListener("change", fill);
  fill();
  box.replaceChildren(el("h2", {}, "Side by side"), el("div", { class: "tools" }, a, b), columns);
}

// ---- spend ------------------------------------------------------------------------------

async function usageView(params) {
  const since = params.get("since") ?? "7d", by = params.get("by") || "strategy";
  const data = await api("usage?" + new URLSearchParams({ since, by }));
  const go = (changes) => { location.hash = "#/usage?" + new URLSearchParams({ since, by, ...changes }); };
  const choose = (id, values, chosen, key) => el("select", { id, onchange: (e) => go({ [key]: e.target.value }) },
    values.map(([v, label]) => el("option", { value: v, selected: v === chosen }, label)));
  const groups = [...data.groups, data.total];
  const most = Math.max(1, ...data.groups.map((g) => g.prompt_tokens + g.completion_tokens));
  const bar = (g) => {
    const whole = el("div", { class: "stack" });
    for (const [part, cls] of [[g.prompt_tokens, "prompt"], [g.reasoning_tokens, "reasoning"], [g.answer_tokens, "answer"]]) {
      const piece = el("span", { class: cls, title: `${cls}: ${num(part)}` });
      piece.style.width = (100 * part) / most + "%";
      whole.append(piece);
    }
    return whole;
  };
  show(el("h1", {}, "Spend"),
    el("div", { class: "filters" }, choose("u-since", [["1d", "last day"], ["7d", "last 7 days"], ["30d", "last 30 days"], ["", "all time"]], since, "since"),
      choose("u-by", [["strategy", "by strategy"], ["day", "by day"], ["model", "by model"]], by, "by")),
    el("table", { class: "usage" },
      el("thead", {}, el("tr", {}, [by, "traces", "prompt", "reasoning", "answer", "time", "cost", "reasoning that changed the answer", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, groups.map((g) => el("tr", { class: g === data.total ? "total" : "" },
        el("td", { class: "mono nowrap" }, g.key), el("td", { class: "num" }, num(g.traces)), el("td", { class: "num" }, num(g.prompt_tokens)),
        el("td", { class: "num" }, num(g.reasoning_tokens)), el("td", { class: "num" }, num(g.answer_tokens)),
        el("td", { class: "num" }, secs(g.seconds)), el("td", { class: "num" }, usd(g.usd)),
        el("td", { class: "num" }, `${pct(g.changed_share)} (${num(g.changed_traces)} trace${g.changed_traces === 1 ? "" : "s"})`),
        el("td", { class: "barcell" }, g === data.total ? null : bar(g)))))),
    el("p", { class: "legend" }, el("span", { class: "key prompt" }, "prompt"), el("span", { class: "key reasoning" }, "reasoning"),
      el("span", { class: "key answer" }, "answer")),
    el("p", { class: "muted" }, "Reasoning that changed the answer: the share of reasoning tokens spent in traces whose final answer differs from their greedy sample's (or first sample's) answer."));
}

window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", render);
