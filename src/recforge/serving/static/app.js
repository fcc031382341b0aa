// recforge explorer: search items (by title, and by text vectors where the model has
// them), see similar ones, a user's history beside their recommendations (each with why:
// the model's nearest history item, and per modality the history item it resembles), and
// a session of items with its next items. Plain JavaScript, no dependencies; talks only to the server that
// served the page (the page's Content-Security-Policy allows nothing else).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const keyRequired =
    document.querySelector('meta[name="recforge-api-key"]').content === "required";
  let apiKey = "";

  /** An HTTP error answered by the API, with its JSON `detail` as text. */
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function detailText(body, status) {
    const detail = body && body.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => (d && d.msg ? d.msg : JSON.stringify(d))).join("; ");
    }
    return "the server answered " + status;
  }

  /** GET a JSON endpoint of this server (POST `body` as JSON when given), with the API
   * key when there is one. */
  async function api(path, body) {
    if (keyRequired && !apiKey) {
      $("api-key").focus();
      throw new ApiError(401, "This server needs an API key: enter it above first.");
    }
    const headers = { Accept: "application/json" };
    if (apiKey) headers["X-API-Key"] = apiKey;
    const init = { headers: headers };
    if (body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    let answer = null;
    try {
      answer = await res.json();
    } catch (e) {
      answer = null;
    }
    if (!res.ok) {
      if (res.status === 401) $("api-key").focus();
      throw new ApiError(res.status, detailText(answer, res.status));
    }
    return answer;
  }

  function showError(err) {
    $("error").textContent = err instanceof Error ? err.message : String(err);
  }

  function clearError() {
    $("error").textContent = "";
  }

  function itemLabel(entry) {
    return entry.title ? entry.title : "Item " + entry.item;
  }

  /** A small button beside an item (`+ session`, `Remove`). */
  function smallButton(className, text, label, onClick) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = className;
    button.textContent = text;
    button.setAttribute("aria-label", label);
    button.addEventListener("click", onClick);
    return button;
  }

  /** A list entry: a button showing the item's similar items, a `+ session` button that
   * adds it to the session, plus optional notes. */
  function itemEntry(entry, notes) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "item";
    button.textContent = itemLabel(entry);
    if (entry.title) {
      const id = document.createElement("span");
      id.className = "id";
      id.textContent = " #" + entry.item;
      button.appendChild(id);
    }
    button.addEventListener("click", () => showSimilar(entry));
    li.appendChild(button);
    li.appendChild(smallButton("add", "+ session",
      "Add " + itemLabel(entry) + " to the session", () => addToSession(entry)));
    for (const note of notes || []) {
      const span = document.createElement("span");
      span.className = note.className;
      span.textContent = note.text;
      li.appendChild(span);
    }
    return li;
  }

  function fill(list, nodes) {
    list.replaceChildren(...nodes);
  }

  // The arrow keys move between the buttons of a result list; from the search box, down
  // goes to the first result.
  function buttonsOf(list) {
    return Array.from(list.querySelectorAll("button.item"));
  }

  function onListKeys(event) {
    const list = event.currentTarget;
    const buttons = buttonsOf(list);
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    let to = -1;
    if (event.key === "ArrowDown") to = Math.min(at + 1, buttons.length - 1);
    else if (event.key === "ArrowUp") to = at - 1;
    else if (event.key === "Home") to = 0;
    else if (event.key === "End") to = buttons.length - 1;
    else return;
    event.preventDefault();
    if (to < 0 && list.id === "search-results") $("search-query").focus();
    else buttons[Math.max(to, 0)].focus();
  }

  for (const id of ["search-results", "similar-results", "history", "recommendations",
    "session-items", "session-recs"]) {
    $(id).addEventListener("keydown", onListKeys);
  }

  $("search-query").addEventListener("keydown", (event) => {
    const first = buttonsOf($("search-results"))[0];
    if (event.key === "ArrowDown" && first) {
      event.preventDefault();
      first.focus();
    }
  });

  // Answers can arrive out of order: each panel keeps only its latest request's answer.
  const latest = { search: 0, similar: 0, user: 0, session: 0 };

  async function search(query) {
    const ticket = ++latest.search;
    $("search-status").textContent = "Searching…";
    $("search-results").setAttribute("aria-busy", "true");
    try {
      const body = await api("/items?limit=20&query=" + encodeURIComponent(query));
      if (ticket !== latest.search) return;
      clearError();
      fill($("search-results"), body.items.map((entry) => itemEntry(entry,
        entry.match === "text" ? [{ className: "meta", text: " (similar text)" }] : [])));
      $("search-status").textContent = searchSummary(body, query);
    } catch (err) {
      if (ticket !== latest.search) return;
      $("search-status").textContent = "";
      showError(err);
    } finally {
      if (ticket === latest.search) $("search-results").removeAttribute("aria-busy");
    }
  }

  /** The search status line: the title matches, then (a model with text vectors) the
   * items listed for the similarity of their text to the query. */
  function searchSummary(body, query) {
    const byText = body.items.filter((e) => e.match === "text").length;
    const titled = body.items.length - byText;
    let text = body.total === 0
      ? "No item matches “" + query + "”"
      : body.total + (body.total === 1 ? " item matches" : " items match") + " “" +
        query + "”" + (body.total > titled ? ", showing the first " + titled : "");
    if (byText) {
      text += (body.total === 0 ? "; " : ", then ") + byText +
        (byText === 1 ? " item" : " items") + " by text similarity";
    }
    return text + ".";
  }

  async function showSimilar(entry) {
    const ticket = ++latest.similar;
    const from = document.activeElement;
    const heading = $("similar-heading");
    heading.hidden = false;
    heading.textContent = "Similar to " + itemLabel(entry);
    $("search-status").textContent = "Finding items similar to " + itemLabel(entry) + "…";
    try {
      const body = await api("/items/" + encodeURIComponent(entry.item) + "/similar?k=10");
      if (ticket !== latest.similar) return;
      clearError();
      fill($("similar-results"), body.similar.map((sim) => itemEntry(sim)));
      $("search-status").textContent = body.similar.length + " items similar to " +
        itemLabel(entry) + ".";
      // Move to the answer, unless the user went elsewhere in the meantime.
      if (document.activeElement === from || document.activeElement === document.body) {
        heading.focus();
      }
    } catch (err) {
      if (ticket !== latest.similar) return;
      fill($("similar-results"), []);
      $("search-status").textContent = "";
      showError(err);
    }
  }

  /** What a reason of GET /explanations says of its group: "similar text", "same
   * genres (Comedy, Drama)". */
  function reasonText(reason) {
    const shared = reason.shared && reason.shared.length
      ? " (" + reason.shared.join(", ") + ")" : "";
    if (reason.kind === "categories") return "same " + reason.group + shared;
    if (reason.kind === "words") return "shared words in " + reason.group + shared;
    return "similar " + reason.group;
  }

  /** One line per history item that a recommendation resembles: "Because you watched
   * “X”: similar text, same genres (Comedy)" (`lead` and `tail` around the item), the
   * most similar first. */
  function modalityLines(explanation, lead, tail) {
    const byItem = new Map();
    for (const reason of explanation.because) {
      const key = JSON.stringify(reason.item);
      if (!byItem.has(key)) byItem.set(key, { entry: reason, parts: [] });
      byItem.get(key).parts.push(reasonText(reason));
    }
    return Array.from(byItem.values()).map((line) => lead + "“" +
      itemLabel(line.entry) + "”" + tail + ": " + line.parts.join(", "));
  }

  function hasModalities() {
    return Boolean(model && model.modalities && model.modalities.length);
  }

  /** Under each entry of `list`, why its item resembles a history in each modality of the
   * model (GET /explanations with `whose`: "user=ID" or "history=ID&history=ID..."; feature
   * models only). `current` says whether the answer is still wanted. */
  async function showModalities(list, items, whose, lead, tail, current) {
    if (!hasModalities() || !items.length) return;
    const query = items.slice(0, 100)
      .map((r) => "item=" + encodeURIComponent(r.item)).join("&");
    const body = await api("/explanations?" + whose + "&" + query);
    if (!current()) return;
    const entries = list.children;
    body.explanations.forEach((explanation, at) => {
      if (at >= entries.length) return;
      for (const text of modalityLines(explanation, lead, tail)) {
        const span = document.createElement("span");
        span.className = "modality";
        span.textContent = text;
        entries[at].appendChild(span);
      }
    });
  }

  function because(item, fallback) {
    if (fallback === "popular") return "Popular with all users (no history to go on)";
    if (item.because) {
      return "Similar to “" + itemLabel(item.because) + "”, in the history";
    }
    return "Scored by the model; no similar item in the history";
  }

  async function showUser(user, k) {
    const ticket = ++latest.user;
    const path = "/users/" + encodeURIComponent(user);
    $("user-status").textContent = "Loading user " + user + "…";
    try {
      const [history, recs] = await Promise.all([
        api(path + "/history?limit=50"),
        api(path + "/recommendations?explain=true&k=" + encodeURIComponent(k)),
      ]);
      if (ticket !== latest.user) return;
      clearError();
      const rated = history.items.some((h) => h.value !== null && h.value !== 1);
      fill($("history"), history.items.map((h) => itemEntry(h, [{
        className: "meta",
        text: h.source === "events" ? " (posted since training)"
          : rated ? " (rated " + h.value + ")" : "",
      }])));
      fill($("recommendations"), recs.items.map((r) => itemEntry(r, [{
        className: "why", text: because(r, recs.fallback),
      }])));
      $("history-heading").textContent = history.total > history.items.length
        ? "History (" + history.items.length + " of " + history.total + ")"
        : "History (" + history.total + ")";
      let summary = "User " + user + ": " + history.total + " items in the history, " +
        recs.items.length + " recommendations.";
      if (!history.known && recs.fallback === "popular") {
        summary = "User " + user + " is unknown to the model: the most popular items.";
      } else if (recs.fallback === "history") {
        summary += " (From the items posted since training.)";
      }
      $("user-status").textContent = summary;
      if (recs.fallback !== "popular") {
        const current = () => ticket === latest.user;
        showModalities($("recommendations"), recs.items, "user=" + encodeURIComponent(user),
          "Because you watched ", "", current).catch((err) => {
          if (current()) showError(err);
        });
      }
    } catch (err) {
      if (ticket !== latest.user) return;
      $("user-status").textContent = "";
      showError(err);
    }
  }

  // The session: items in the order they were added (newest last), and the model's
  // next items for it (POST /recommendations with the session as "history").
  const MAX_SESSION = 200;
  let session = [];
  let model = null; // /model's answer

  function sessionEntry(entry, at) {
    const li = itemEntry(entry);
    li.querySelector("button.add").remove();
    li.appendChild(smallButton("remove", "Remove",
      "Remove " + itemLabel(entry) + " from the session", () => {
        session.splice(at, 1);
        refreshSession();
        const left = buttonsOf($("session-items"));
        if (left.length) left[Math.min(at, left.length - 1)].focus();
        else $("session-item").focus();
      }));
    return li;
  }

  function addToSession(entry) {
    session.push({ item: entry.item, title: entry.title || null });
    if (session.length > MAX_SESSION) session = session.slice(-MAX_SESSION);
    refreshSession();
  }

  async function refreshSession() {
    const ticket = ++latest.session;
    fill($("session-items"), session.map((e, at) => sessionEntry(e, at)));
    $("session-items-heading").textContent = "Session (" + session.length + ")";
    if (!session.length) {
      fill($("session-recs"), []);
      $("session-status").textContent = "The session is empty.";
      return;
    }
    if (model && !model.supports_history) {
      fill($("session-recs"), []);
      $("session-status").textContent = "Sorry: model " + model.model + " cannot " +
        "recommend for a session it was not trained on. Serve a model that folds in a " +
        "history (sasrec, gru4rec, caser, sknn, ease, itemknn, …) to see next items.";
      return;
    }
    $("session-status").textContent = "Finding the next items…";
    $("session-recs").setAttribute("aria-busy", "true");
    try {
      const body = await api("/recommendations", {
        history: session.map((e) => e.item), k: 10,
      });
      if (ticket !== latest.session) return;
      clearError();
      fill($("session-recs"), body.items.map((r) => itemEntry(r)));
      let text = body.items.length + " next items for a session of " + session.length +
        (session.length === 1 ? " item" : " items") +
        (model && model.reads_order ? ", read in order (newest last)."
          : " (this model reads the session as a set: the order does not matter).");
      if (body.unknown_items.length) {
        text += " Unknown to the model, left out: " + body.unknown_items.join(", ") + ".";
      }
      $("session-status").textContent = text;
      // the newest 100 items of the session: what each next item resembles
      const current = () => ticket === latest.session;
      const whose = session.slice(-100)
        .map((e) => "history=" + encodeURIComponent(e.item)).join("&");
      showModalities($("session-recs"), body.items, whose, "Like ", " in the session",
        current).catch((err) => {
        if (current()) showError(err);
      });
    } catch (err) {
      if (ticket !== latest.session) return;
      fill($("session-recs"), []);
      $("session-status").textContent = "";
      showError(err);
    } finally {
      if (ticket === latest.session) $("session-recs").removeAttribute("aria-busy");
    }
  }

  async function addTyped(text) {
    $("session-status").textContent = "Looking up “" + text + "”…";
    try {
      // by title or id only: a typed session item is never a guess by text similarity
      const found = await api("/items?limit=1&match=title&query=" +
        encodeURIComponent(text));
      if (!found.items.length) {
        $("session-status").textContent = "No item matches “" + text + "”.";
        return;
      }
      clearError();
      $("session-item").value = "";
      addToSession(found.items[0]);
    } catch (err) {
      $("session-status").textContent = "";
      showError(err);
    }
  }

  async function showModel() {
    try {
      const info = await api("/model");
      model = info;
      const groups = (info.modalities || []).map((m) => m.group);
      $("model-info").textContent = "Model " + info.model + ": " +
        info.n_users.toLocaleString("en") + " users, " +
        info.n_items.toLocaleString("en") + " items" +
        (groups.length ? "; item features: " + groups.join(", ") + "." : ".");
      if ((info.modalities || []).some((m) => m.kind === "vectors")) {
        $("search-label").textContent = "Title, item id or words";
      }
      refreshSession();
      return true;
    } catch (err) {
      showError(err);
      return false;
    }
  }

  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = $("search-query").value.trim();
    if (query) search(query);
  });

  $("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const user = $("user-id").value.trim();
    if (user) showUser(user, $("user-k").value || "10");
  });

  $("session-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("session-item").value.trim();
    if (text) addTyped(text);
  });

  $("session-clear").addEventListener("click", () => {
    session = [];
    refreshSession();
    $("session-item").focus();
  });

  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    apiKey = $("api-key").value;
    if (await showModel()) {
      clearError();
      $("search-query").focus();
    }
  });

  if (keyRequired) {
    $("key-form").hidden = false;
    $("model-info").textContent = "Enter the API key to start.";
    $("api-key").focus();
  } else {
    showModel();
    $("search-query").focus();
  }
})();
