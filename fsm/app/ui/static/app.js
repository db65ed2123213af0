// The lambda-fsm dashboard: plain browser JavaScript, no build step, no dependency.
//
// Everything it shows comes from the HTTP API under /api (the same routes the Lambda
// entry point serves) and from /api/stream, Server-Sent Events the dashboard server
// pushes when an instance changes. The page never reloads: a change re-renders the
// parts it touches.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const HISTORY_PAGE = 200;      // history entries shown: the most recent ones
  const LIST_PAGE = 50;

  // Off 127.0.0.1 the server wants a token: open the page as /?token=TOKEN.
  const token = new URLSearchParams(location.search).get("token");

  const page = {
    selected: null,              // the shown instance's id
    view: null,                  // its status, as GET /instances/{id} answers
    machines: new Map(),         // name -> structure (GET /machines/{name}), fetched once
    listNext: null,
    listTicket: 0,
    listStream: null,
    instanceStream: null,
  };

  const $ = (id) => document.getElementById(id);

  // ---- the API ---------------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const reply = await fetch(`/api${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await reply.json().catch(() => ({}));
    if (!reply.ok) throw new Error(data.message || `${reply.status} ${reply.statusText}`);
    return data;
  }

  function streamUrl(params) {
    const query = new URLSearchParams(params);
    if (token) query.set("token", token);
    return `/api/stream?${query}`;
  }

  const enc = encodeURIComponent;

  async function machine(name) {
    if (!page.machines.has(name)) page.machines.set(name, await api("GET", `/machines/${enc(name)}`));
    return page.machines.get(name);
  }

  // ---- small DOM helpers -----------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) node.append(child);
    return node;
  }

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function badge(status) {
    return el("span", { class: `badge status-${status || "none"}` }, status || "-");
  }

  function shortTime(iso) {
    if (!iso) return "-";
    const when = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    return `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())} ` +
      `${pad(when.getHours())}:${pad(when.getMinutes())}:${pad(when.getSeconds())}`;
  }

  // The list's column: the time alone for today, the date alone before.
  function compactTime(iso) {
    if (!iso) return "-";
    const full = shortTime(iso);
    return full.slice(0, 10) === shortTime(new Date().toISOString()).slice(0, 10) ? full.slice(11) : full.slice(0, 10);
  }

  function say(target, text, failed = false) {
    target.textContent = text;
    target.classList.toggle("failed", failed);
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  function setLive(state, text) {
    const live = $("live");
    live.dataset.state = state;
    live.textContent = text;
  }

  // ---- the instance list -----------------------------------------------------------------

  function filters() {
    const query = { limit: String(LIST_PAGE) };
    for (const name of ["machine", "status", "state"]) {
      const value = $(`filter-${name}`).value.trim();
      if (value) query[name] = value;
    }
    return query;
  }

  async function loadList(more = false) {
    const query = filters();
    if (more && page.listNext) query.next = page.listNext;
    const ticket = ++page.listTicket;   // answers may arrive out of order: the last asked wins
    let data;
    try {
      data = await api("GET", `/instances?${new URLSearchParams(query)}`);
    } catch (error) {
      if (ticket === page.listTicket) say($("list-note"), `Cannot list instances: ${error.message}`, true);
      return;
    }
    if (ticket !== page.listTicket) return;
    const body = $("instances").tBodies[0];
    if (!more) body.replaceChildren();
    for (const item of data.instances) body.append(listRow(item));
    page.listNext = data.next || null;
    $("more").hidden = !page.listNext;
    say($("list-note"), body.rows.length ? "" : "No instances match.");
  }

  function listRow(item) {
    const cid = item.correlation_id;
    const row = el("tr", { "data-id": cid, tabIndex: 0, title: cid },
      el("td", { class: "mono" }, cid),
      el("td", {}, item.machine || "-"),
      el("td", { class: "cell-state" }, item.state || "(start)"),
      el("td", { class: "cell-status" }, badge(item.status)),
      el("td", { class: "cell-updated", title: shortTime(item.updated_at) }, compactTime(item.updated_at)));
    row.classList.toggle("selected", cid === page.selected);
    row.addEventListener("click", () => select(cid));
    row.addEventListener("keydown", (event) => { if (event.key === "Enter") select(cid); });
    return row;
  }

  function updateListRow(view) {
    const row = document.querySelector(`#instances tr[data-id="${CSS.escape(view.correlation_id)}"]`);
    if (row) row.replaceWith(listRow(view));
  }

  const refreshList = debounce(() => loadList(), 150);

  function followList() {
    if (page.listStream) page.listStream.close();
    const machineName = $("filter-machine").value;
    const stream = new EventSource(streamUrl(machineName ? { machine: machineName } : {}));
    stream.addEventListener("open", () => { setLive("live", "live"); refreshList(); });
    stream.addEventListener("instances", () => { setLive("live", "live"); refreshList(); });
    stream.addEventListener("unavailable", () => setLive("down", "the store cannot be read; retrying"));
    // EventSource retries by itself, unless the server refused it (a wrong token, say).
    stream.addEventListener("error", () => setLive("down", stream.readyState === EventSource.CLOSED
      ? "disconnected: reload to retry" : "reconnecting"));
    page.listStream = stream;
  }

  // States belong to a machine: the state filter offers the chosen machine's.
  async function fillStateFilter() {
    const name = $("filter-machine").value;
    const select = $("filter-state");
    const states = name ? (await machine(name)).states.map((state) => state.name) : [];
    select.replaceChildren(el("option", { value: "" }, "any"), ...states.map((s) => el("option", { value: s }, s)));
    select.disabled = !name;
  }

  async function loadMachines() {
    let data;
    try {
      data = await api("GET", "/machines");
    } catch (error) {
      say($("list-note"), `Cannot read machines: ${error.message}`, true);
      return;
    }
    for (const item of data.machines) {
      $("filter-machine").append(el("option", { value: item.name }, item.name));
      $("start-machine").append(el("option", { value: item.name }, item.name));
    }
  }

  // ---- one instance ----------------------------------------------------------------------

  async function select(cid) {
    if (page.selected !== cid) history.replaceState(null, "", `${location.search}#/instances/${enc(cid)}`);
    page.selected = cid;
    for (const row of document.querySelectorAll("#instances tbody tr")) {
      row.classList.toggle("selected", row.dataset.id === cid);
    }
    say($("event-result"), "");
    $("empty").hidden = true;
    $("detail").hidden = false;
    try {
      await showInstance(await api("GET", `/instances/${enc(cid)}`));
    } catch (error) {
      $("detail").hidden = true;
      say($("empty"), `Cannot show ${cid}: ${error.message}`, true);
      $("empty").hidden = false;
      return;
    }
    followInstance(cid);
  }

  function followInstance(cid) {
    if (page.instanceStream) page.instanceStream.close();
    const stream = new EventSource(streamUrl({ instance: cid }));
    stream.addEventListener("status", (message) => {
      const view = JSON.parse(message.data);
      if (view.correlation_id !== page.selected) return;
      showInstance(view);
      updateListRow(view);
    });
    page.instanceStream = stream;
  }

  async function showInstance(view) {
    page.view = view;
    $("d-id").textContent = view.correlation_id;
    $("d-status").replaceWith(Object.assign(badge(view.status), { id: "d-status" }));
    $("d-machine").textContent = view.machine;
    $("d-state").textContent = view.state || "(start)";
    $("d-steps").textContent = view.steps;
    $("d-retries").textContent = view.retries;
    $("d-updated").textContent = shortTime(view.updated_at);
    $("d-created").textContent = shortTime(view.created_at);
    $("d-error").hidden = !view.last_error;
    $("d-error").textContent = view.last_error ? `Last error: ${view.last_error}` : "";
    $("d-context").textContent = JSON.stringify(view.context, null, 2);
    const finished = ["done", "failed", "cancelled"].includes(view.status);
    $("cancel").hidden = finished;
    $("retry").hidden = view.status !== "failed";
    const [structure, entries] = await Promise.all([machine(view.machine), loadHistory(view.correlation_id)]);
    if (page.view !== view) return;   // a newer status arrived while these loaded
    fillEventChoices(structure, view);
    drawMachine($("diagram"), structure, view, entries);
  }

  async function loadHistory(cid) {
    const path = `/instances/${enc(cid)}/history`;
    let data = await api("GET", `${path}?limit=${HISTORY_PAGE}`);
    if (data.total > HISTORY_PAGE) {
      data = await api("GET", `${path}?limit=${HISTORY_PAGE}&next=${data.total - HISTORY_PAGE}`);
    }
    const shown = data.history.length < data.total ? `(latest ${data.history.length} of ${data.total})` : "";
    $("history-note").textContent = shown;
    const body = $("history").tBodies[0];
    body.replaceChildren(...data.history.slice().reverse().map(historyRow));
    return data.history;
  }

  function historyRow(entry) {
    const note = entry.rejected ? `rejected: ${entry.error}` : entry.cancelled ? `cancelled: ${entry.cancelled}`
      : entry.error ? `attempt failed: ${entry.error}` : "";
    const via = entry.event ? ` \u2014${entry.event}\u2192 ` : " \u2192 ";
    const move = `${entry.from || "(start)"}${via}${entry.to || "(stays)"}`;
    return el("tr", { class: note ? "noted" : "" },
      el("td", {}, String(entry.step)),
      el("td", { title: entry.time }, shortTime(entry.time)),
      el("td", {}, move),
      el("td", {}, `${(entry.duration * 1000).toFixed(2)} ms`),
      el("td", {}, note));
  }

  function fillEventChoices(structure, view) {
    const state = structure.states.find((s) => s.name === view.state);
    // A state's own timeout event is fired by its timer, not sent.
    const events = state ? Object.keys(state.transitions).filter((e) => e !== state.timeout_event).sort() : [];
    const select = $("event-name");
    const kept = select.value;
    select.replaceChildren(...events.map((e) => el("option", { value: e }, e)));
    if (events.includes(kept)) select.value = kept;
    const finished = ["done", "failed", "cancelled"].includes(view.status);
    $("event-form").hidden = finished || events.length === 0;
    $("event-closed").hidden = !$("event-form").hidden;
    $("event-closed").textContent = finished ? `This instance is ${view.status}: it takes no more events.`
      : `State ${view.state || "(start)"} takes no events from outside.`;
  }

  // ---- actions ---------------------------------------------------------------------------

  function parseObject(text, what) {
    const value = text.trim() ? JSON.parse(text) : {};
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new Error(`${what} must be a JSON object such as {"key": "value"}`);
    }
    return value;
  }

  async function sendEvent(event) {
    event.preventDefault();
    const result = $("event-result");
    const name = $("event-name").value;
    try {
      const data = parseObject($("event-data").value, "the data");
      say(result, `sending ${name}\u2026`);
      await api("POST", `/instances/${enc(page.selected)}/events`, { event: name, data });
      say(result, `${name} sent`);
    } catch (error) {
      say(result, error.message, true);
    }
  }

  async function startInstance(event) {
    event.preventDefault();
    const result = $("start-result");
    try {
      const body = { machine: $("start-machine").value, context: parseObject($("start-context").value, "the context") };
      const given = $("start-id").value.trim();
      if (given) body.correlation_id = given;
      const reply = await api("POST", "/instances", body);
      say(result, `started ${reply.correlation_id}`);
      await loadList();
      select(reply.correlation_id);
    } catch (error) {
      say(result, error.message, true);
    }
  }

  async function act(what) {
    const result = $("event-result");
    try {
      const body = what === "cancel" ? { reason: "cancelled from the dashboard" } : {};
      await api("POST", `/instances/${enc(page.selected)}/${what}`, body);
      say(result, what === "cancel" ? "cancel sent" : "retry sent");
    } catch (error) {
      say(result, error.message, true);
    }
  }

  // ---- the diagram -----------------------------------------------------------------------
  //
  // A machine is drawn as one "level": sibling states in columns by their distance from
  // the initial state, left to right, each column ordered to keep edges short. Nested
  // states (compound and parallel ones) would each be a cluster: a box drawn by
  // drawLevel around its own level, laid out by the same layoutLevel. The API describes
  // flat machines only for now, so `children` is always empty.

  const NODE_HEIGHT = 34;
  const ROW_GAP = 26;
  const PADDING = 16;
  const LOOP_RISE = 36;          // how far a transition to its own state arcs above it
  const measure = (() => {
    const context = document.createElement("canvas").getContext("2d");
    return (text, font) => { context.font = font; return context.measureText(text).width; };
  })();
  const NODE_FONT = "600 13px system-ui, sans-serif";
  const LABEL_FONT = "11px system-ui, sans-serif";

  function levelOf(structure) {
    const nodes = structure.states.map((state) => ({
      name: state.name, initial: state.initial, final: state.final, children: [],
      width: Math.max(84, measure(state.name, NODE_FONT) + 28), height: NODE_HEIGHT,
    }));
    // One edge per (source, target), its events joined: parallel arrows would overlap.
    const edges = new Map();
    for (const state of structure.states) {
      for (const [event, target] of Object.entries(state.transitions)) {
        const key = `${state.name}\u0000${target}`;
        if (!edges.has(key)) edges.set(key, { from: state.name, to: target, events: [] });
        edges.get(key).events.push(event);
      }
    }
    return { nodes, edges: [...edges.values()], initial: structure.initial };
  }

  function rankNodes(level) {
    const rank = new Map([[level.initial, 0]]);
    const queue = [level.initial];
    while (queue.length) {
      const name = queue.shift();
      for (const edge of level.edges) {
        if (edge.from === name && !rank.has(edge.to)) {
          rank.set(edge.to, rank.get(name) + 1);
          queue.push(edge.to);
        }
      }
    }
    const last = Math.max(...rank.values());
    for (const node of level.nodes) if (!rank.has(node.name)) rank.set(node.name, last + 1);
    return rank;
  }

  function layoutLevel(level) {
    const rank = rankNodes(level);
    const columns = [];
    for (const node of level.nodes) (columns[rank.get(node.name)] ||= []).push(node);
    const row = new Map();
    const place = () => columns.forEach((column) => column.forEach((node, i) => row.set(node.name, i)));
    place();
    // Two sweeps of the barycenter heuristic: a state sits near the states leading to it.
    for (let sweep = 0; sweep < 2; sweep++) {
      for (const column of columns.slice(1)) {
        const centre = (node) => {
          const from = level.edges.filter((e) => e.to === node.name && rank.get(e.from) < rank.get(node.name));
          return from.length ? from.reduce((sum, e) => sum + row.get(e.from), 0) / from.length : row.get(node.name);
        };
        column.sort((a, b) => centre(a) - centre(b));
      }
      place();
    }
    const tallest = Math.max(...columns.map((column) => column.length));
    const top = PADDING + (level.edges.some((e) => e.from === e.to) ? LOOP_RISE : 0);
    const positions = new Map();
    const bounds = [];
    let x = PADDING + 36;   // room for the start dot
    columns.forEach((column, c) => {
      const width = Math.max(...column.map((node) => node.width));
      bounds[c] = { left: x, right: x + width };
      const offset = (tallest - column.length) * (NODE_HEIGHT + ROW_GAP) / 2;
      column.forEach((node, i) => {
        positions.set(node.name, { x: x + (width - node.width) / 2, y: top + offset + i * (NODE_HEIGHT + ROW_GAP),
          width: node.width, height: node.height });
      });
      const labels = level.edges.filter((e) => rank.get(e.from) === c && rank.get(e.to) > c)
        .map((e) => measure(e.events.join(", "), LABEL_FONT));
      // An edge back runs down the gap left of its source's column and up the gap right
      // of its target's: each widens the gap it runs in.
      const through = level.edges.filter((e) => e.from !== e.to && rank.get(e.to) <= rank.get(e.from) &&
        (rank.get(e.from) === c + 1 || (rank.get(e.to) === c && rank.get(e.to) < rank.get(e.from)))).length;
      x += width + Math.max(70, ...labels.map((w) => w + 28)) + through * 10;
    });
    const height = top + PADDING + tallest * (NODE_HEIGHT + ROW_GAP) - ROW_GAP;
    return { rank, positions, columns: bounds, width: x - 40, height };
  }

  function drawMachine(target, structure, view, entries) {
    const level = levelOf(structure);
    const layout = layoutLevel(level);
    const last = [...entries].reverse().find((entry) => entry.to);
    const visited = new Set(entries.map((entry) => entry.to).filter(Boolean));
    const active = new Set(view.state ? [view.state] : []);
    target.replaceChildren(defs());
    const drawn = drawLevel(target, level, layout, { active, visited, status: view.status, last });
    target.setAttribute("viewBox", `0 0 ${layout.width} ${drawn.bottom + PADDING}`);
    target.setAttribute("width", layout.width);
    target.setAttribute("height", drawn.bottom + PADDING);
  }

  function defs() {
    const group = svg("defs");
    for (const [id, css] of [["arrow", "arrowhead"], ["arrow-taken", "arrowhead taken"]]) {
      const marker = svg("marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
        orient: "auto-start-reverse" });
      marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: css }));
      group.append(marker);
    }
    return group;
  }

  function drawLevel(target, level, layout, look) {
    const edges = svg("g", { class: "edges" });
    const nodes = svg("g", { class: "states" });
    target.append(edges, nodes);
    let bottom = layout.height;
    let detour = 0;
    for (const edge of level.edges) {
      const taken = look.last && look.last.from === edge.from && look.last.to === edge.to;
      const route = edgeRoute(edge, layout, detour);
      if (route.detour) { detour += 1; bottom = Math.max(bottom, route.bottom); }
      const group = svg("g", { class: `edge${taken ? " taken" : ""}`, "data-from": edge.from, "data-to": edge.to });
      group.append(svg("path", { d: route.path, "marker-end": `url(#${taken ? "arrow-taken" : "arrow"})` }));
      const text = edge.events.join(", ");
      const width = measure(text, LABEL_FONT) + 8;
      group.append(svg("rect", { class: "label-back", x: route.label.x - width / 2, y: route.label.y - 8,
        width, height: 15, rx: 3 }));
      group.append(svg("text", { class: "edge-label", x: route.label.x, y: route.label.y + 3.5 }, text));
      edges.append(group);
    }
    const start = layout.positions.get(level.initial);
    nodes.append(svg("circle", { class: "start", cx: PADDING + 6, cy: start.y + start.height / 2, r: 6 }));
    edges.append(svg("path", { class: "start-edge", d: `M${PADDING + 12},${start.y + start.height / 2} H${start.x}`,
      "marker-end": "url(#arrow)" }));
    for (const node of level.nodes) nodes.append(drawState(node, layout.positions.get(node.name), look));
    return { bottom };
  }

  function drawState(node, at, look) {
    const classes = ["state"];
    if (look.active.has(node.name)) classes.push("active", `status-${look.status}`);
    else if (look.visited.has(node.name)) classes.push("visited");
    if (node.final) classes.push("final");
    const group = svg("g", { class: classes.join(" "), "data-state": node.name });
    group.append(svg("rect", { x: at.x, y: at.y, width: at.width, height: at.height, rx: 9 }));
    if (node.final) {
      group.append(svg("rect", { class: "inner", x: at.x + 4, y: at.y + 4, width: at.width - 8,
        height: at.height - 8, rx: 6 }));
    }
    group.append(svg("text", { x: at.x + at.width / 2, y: at.y + at.height / 2 + 4.5 }, node.name));
    group.append(svg("title", {}, node.name + (look.active.has(node.name) ? ` (current: ${look.status})` : "")));
    return group;
  }

  // A forward edge is a curve from the source's right side to the target's left side; a
  // loop arcs over its state. An edge back runs in right angles through the gaps between
  // columns and under the drawing (each one lower and a little apart), so that it crosses
  // no state; one within a column runs down the gap on the column's left.
  function edgeRoute(edge, layout, nth) {
    const a = layout.positions.get(edge.from);
    const b = layout.positions.get(edge.to);
    if (edge.from === edge.to) {
      const left = a.x + a.width / 2 - 14;
      const right = a.x + a.width / 2 + 14;
      const rise = a.y - LOOP_RISE;
      return { path: `M${left},${a.y} C${left - 18},${rise} ${right + 18},${rise} ${right},${a.y}`,
        label: { x: a.x + a.width / 2, y: a.y - LOOP_RISE * 0.75 - 6 } };
    }
    const from = layout.rank.get(edge.from), to = layout.rank.get(edge.to);
    if (to > from) {
      const x1 = a.x + a.width, y1 = a.y + a.height / 2, x2 = b.x, y2 = b.y + b.height / 2;
      const bend = (x2 - x1) / 2;
      return { path: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
        label: { x: (x1 + x2) / 2, y: (y1 + y2) / 2 } };
    }
    const y1 = a.y + a.height - 9, y2 = b.y + b.height - 9;
    const down = layout.columns[from].left - 12 - nth * 5;
    if (to === from) {
      return { path: `M${a.x},${y1} H${down} V${y2} H${b.x}`, label: { x: down, y: (y1 + y2) / 2 }, detour: true,
        bottom: layout.height };
    }
    const up = layout.columns[to].right + 12 + nth * 5;
    const below = layout.height + 8 + nth * 22;
    const r = 8;   // corner radius
    const path = `M${a.x},${y1} H${down + r} Q${down},${y1} ${down},${y1 + r} V${below - r} ` +
      `Q${down},${below} ${down - r},${below} H${up + r} Q${up},${below} ${up},${below - r} V${y2 + r} ` +
      `Q${up},${y2} ${up + r},${y2} H${b.x + b.width}`;
    return { path, label: { x: (down + up) / 2, y: below }, detour: true, bottom: below + 10 };
  }

  // ---- start -----------------------------------------------------------------------------

  function fromHash() {
    const match = location.hash.match(/^#\/instances\/(.+)$/);
    return match ? decodeURIComponent(match[1]) : null;
  }

  async function start() {
    $("filters").addEventListener("submit", (event) => event.preventDefault());
    $("filter-machine").addEventListener("change", async () => {
      await fillStateFilter();
      loadList();
      followList();
    });
    $("filter-status").addEventListener("change", () => loadList());
    $("filter-state").addEventListener("change", () => loadList());
    $("more").addEventListener("click", () => loadList(true));
    $("event-form").addEventListener("submit", sendEvent);
    $("start-form").addEventListener("submit", startInstance);
    $("cancel").addEventListener("click", () => act("cancel"));
    $("retry").addEventListener("click", () => act("retry"));
    window.addEventListener("hashchange", () => {
      const cid = fromHash();
      if (cid && cid !== page.selected) select(cid);
    });
    await loadMachines();
    await loadList();
    followList();
    const cid = fromHash();
    if (cid) select(cid);
  }

  start();
})();
