// weft's dashboard: refreshes the parts of a page marked `data-refresh` every two seconds
// with the HTML fragment the server renders for them. No other script, no inline code: the
// pages are served with `Content-Security-Policy: default-src 'self'`.
"use strict";

const EVERY_MS = 2000;

function say(text, bad) {
  const status = document.getElementById("status");
  if (!status) return;
  status.textContent = text;
  status.classList.toggle("bad", Boolean(bad));
}

async function refresh(element) {
  let response;
  try {
    response = await fetch(element.dataset.refresh, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
      redirect: "manual",
    });
  } catch (e) {
    say("weft is not answering; retrying", true);
    return;
  }
  // A session that ended sends the page to the login form.
  if (response.type === "opaqueredirect" || response.status === 401) {
    window.location.assign("/ui/login");
    return;
  }
  if (!response.ok) {
    say(`refresh failed: HTTP ${response.status}`, true);
    return;
  }
  element.innerHTML = await response.text();
  say(`updated ${new Date().toLocaleTimeString()}`, false);
}

function start() {
  const live = document.querySelectorAll("[data-refresh]");
  if (live.length === 0) return;
  const tick = () => {
    // A hidden tab asks for nothing.
    if (document.visibilityState === "visible") live.forEach(refresh);
  };
  setInterval(tick, EVERY_MS);
}

document.addEventListener("DOMContentLoaded", start);

// Buttons that change something: `data-post` is the API call (the session's cookie goes with
// it), `data-confirm` the question asked first (`{n}` is filled with what `data-count`, a dry
// run, says would be touched now), `data-body` the id of a textarea whose JSON is sent, and
// `data-then` where to go after (else the page reloads), `data-wait` how long to wait first.
async function act(button) {
  const { post, count, confirm: question, body: bodyFrom, then } = button.dataset;
  let text = question;
  if (count) {
    const dry = await fetch(count, { method: "POST", credentials: "same-origin" });
    const answer = await dry.json().catch(() => ({}));
    if (!dry.ok) return say(answer.error || `HTTP ${dry.status}`, true);
    if (!answer.matched) return say("nothing matches now", true);
    text = question.replace("{n}", answer.matched);
  }
  let body;
  if (bodyFrom) {
    body = document.getElementById(bodyFrom).value;
    try {
      JSON.parse(body);
    } catch (e) {
      return say(`the message is not JSON: ${e.message}`, true);
    }
  }
  if (text && !window.confirm(text)) return;
  button.disabled = true;
  const response = await fetch(post, {
    method: "POST",
    credentials: "same-origin",
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body,
  });
  button.disabled = false;
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    return say(answer.error || `HTTP ${response.status}`, true);
  }
  // A reload answers at once and runs on: give it a moment before showing how it went.
  if (button.dataset.wait) await new Promise((r) => setTimeout(r, Number(button.dataset.wait)));
  if (then) window.location.assign(then);
  else window.location.reload();
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-post]");
  if (!button) return;
  event.preventDefault();
  act(button).catch((e) => say(`failed: ${e.message}`, true));
});

// The dead-letter list's row selection: "Replay selected" and "Purge selected" act on the
// ticked rows one by one (`data-picked` is the API path, `?id=` added), after a question
// saying how many.
function picked() {
  return [...document.querySelectorAll("input.pick:checked")].map((box) => box.value);
}

function updatePicked() {
  const n = picked().length;
  document.querySelectorAll("button[data-picked]").forEach((button) => {
    button.disabled = n === 0;
    button.textContent = button.textContent.replace(/ \(\d+\)$/, "") + (n ? ` (${n})` : "");
  });
}

async function actOnPicked(button) {
  const ids = picked();
  if (ids.length === 0) return;
  if (!window.confirm(button.dataset.confirm.replace("{n}", ids.length))) return;
  button.disabled = true;
  let done = 0;
  for (const id of ids) {
    const response = await fetch(`${button.dataset.picked}?id=${encodeURIComponent(id)}`, {
      method: "POST",
      credentials: "same-origin",
    });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}));
      button.disabled = false;
      return say(`${done} of ${ids.length} done, then: ${answer.error || `HTTP ${response.status}`}`, true);
    }
    done += 1;
  }
  window.location.reload();
}

document.addEventListener("change", (event) => {
  if (event.target.id === "pick-all") {
    document.querySelectorAll("input.pick").forEach((box) => {
      box.checked = event.target.checked;
    });
  }
  if (event.target.matches("input.pick, #pick-all")) updatePicked();
});

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-picked]");
  if (!button) return;
  event.preventDefault();
  actOnPicked(button).catch((e) => say(`failed: ${e.message}`, true));
});

// The tap page: an EventSource on the flow's tap (the session's cookie goes with it), rows
// newest first, at most "Rows kept" of them; "Pause view" keeps listening but shows nothing new.
function startTap(form) {
  const rows = document.getElementById("tap-rows");
  const pause = document.getElementById("tap-pause");
  const set = (id, text) => {
    document.getElementById(id).textContent = text;
  };
  let source = null;
  let paused = false;
  let seen = 0;
  let hidden = 0;
  const show = (event) => {
    const tapped = JSON.parse(event.data);
    set("tap-seen", ++seen);
    if (paused) {
      set("tap-hidden", ++hidden);
      return;
    }
    const row = document.createElement("tr");
    if (tapped.outcome) row.className = tapped.outcome;
    const what = tapped.outcome
      ? `${tapped.outcome}${tapped.reason ? `: ${tapped.reason}` : ""}`
      : JSON.stringify(tapped.value);
    for (const text of [tapped.at.slice(11, 23), tapped.stage, tapped.id, what]) {
      const cell = document.createElement("td");
      cell.textContent = text.length > 300 ? `${text.slice(0, 300)}…` : text;
      if (text.length > 300) cell.title = text.slice(0, 65536);
      row.appendChild(cell);
    }
    rows.prepend(row);
    const keep = Math.max(1, Number(form.elements.keep.value) || 100);
    while (rows.children.length > keep) rows.lastElementChild.remove();
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (source) source.close();
    const query = new URLSearchParams({ sample: form.elements.sample.value || "1", limit: "100000" });
    if (form.elements.stage.value) query.set("stage", form.elements.stage.value);
    source = new EventSource(`${form.dataset.url}?${query}`);
    source.addEventListener("message", show);
    source.addEventListener("open", () => set("tap-state", "Listening."));
    source.addEventListener("error", () => {
      set("tap-state", "The stream ended or was refused: check the sample, then listen again.");
      source.close();
    });
    pause.disabled = false;
  });
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume view" : "Pause view";
  });
  document.getElementById("tap-clear").addEventListener("click", () => rows.replaceChildren());
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("tap-form");
  if (form) startTap(form);
});

// The config page's check: the YAML goes to the API, which applies nothing; its errors (with
// line:col) or the flows it defines come back.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("check-form");
  if (!form) return;
  const result = document.getElementById("check-result");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch(form.dataset.url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/yaml" },
      body: document.getElementById("check-text").value,
    });
    const answer = await response.json().catch(() => ({}));
    result.hidden = false;
    if (!response.ok) {
      result.className = "errors error";
      result.textContent = answer.error || `HTTP ${response.status}`;
    } else if (answer.valid) {
      result.className = "errors ok";
      result.textContent = `valid: ${answer.flows.length} flow(s): ${answer.flows.join(", ")}`;
    } else {
      result.className = "errors error";
      result.textContent = answer.errors.join("\n");
    }
  });
});
