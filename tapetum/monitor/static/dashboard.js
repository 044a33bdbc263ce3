// Tapetum live dashboard: polls /metrics (Prometheus text format) and draws it.
// No framework, no build step; served as a file so the page's CSP can forbid inline code.
"use strict";

(function () {
  const POLL_MS = 1000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const SLO_S = 0.1;
  let apiKey = null;
  let previous = null; // the last parsed scrape, for per-poll deltas
  let polls = 0;

  // ------------------------------------------------------------------ API key (serve)
  function readKey() {
    const match = /(?:^#|&)key=([^&]+)/.exec(window.location.hash);
    if (match) {
      apiKey = decodeURIComponent(match[1]);
      sessionStorage.setItem("tapetum-key", apiKey);
      history.replaceState(null, "", window.location.pathname + window.location.search);
    } else {
      apiKey = sessionStorage.getItem("tapetum-key");
    }
  }

  function askForKey() {
    document.getElementById("auth").hidden = false;
  }

  document.addEventListener("DOMContentLoaded", function () {
    readKey();
    document.getElementById("key-save").addEventListener("click", function () {
      const value = document.getElementById("key").value.trim();
      if (value) {
        apiKey = value;
        sessionStorage.setItem("tapetum-key", value);
        document.getElementById("auth").hidden = true;
        poll();
      }
    });
    window.addEventListener("hashchange", function () {
      readKey();
      document.getElementById("auth").hidden = true;
      poll();
    });
    poll();
    window.setInterval(poll, POLL_MS);
  });

  // ------------------------------------------------------------------ parsing
  // Returns Map(metric name -> [{labels: {..}, value: Number}]).
  function parse(text) {
    const out = new Map();
    const labelRe = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (const line of text.split("\n")) {
      if (!line || line[0] === "#") continue;
      const brace = line.indexOf("{");
      const space = line.lastIndexOf(" ");
      let name;
      const labels = {};
      let rest;
      if (brace >= 0 && brace < space) {
        name = line.slice(0, brace);
        const close = line.lastIndexOf("}");
        const body = line.slice(brace + 1, close);
        let m;
        labelRe.lastIndex = 0;
        while ((m = labelRe.exec(body)) !== null) {
          labels[m[1]] = m[2].replace(/\\"/g, '"').replace(/\\n/g, "\n").replace(/\\\\/g, "\\");
        }
        rest = line.slice(close + 1).trim();
      } else {
        const parts = line.split(" ");
        name = parts[0];
        rest = parts.slice(1).join(" ");
      }
      const value = parseFloat(rest.split(" ")[0]);
      if (!out.has(name)) out.set(name, []);
      out.get(name).push({ labels: labels, value: value });
    }
    return out;
  }

  function series(scrape, name, filter) {
    const all = scrape.get(name) || [];
    return all.filter(function (s) {
      for (const k in filter) if (s.labels[k] !== filter[k]) return false;
      return true;
    });
  }

  function one(scrape, name, filter) {
    const found = series(scrape, name, filter || {});
    return found.length ? found[0].value : null;
  }

  function sources(scrape) {
    const ids = new Set();
    for (const name of ["tapetum_stream_frames_read_total", "tapetum_stream_fps", "tapetum_drift_active"]) {
      for (const s of series(scrape, name, {})) ids.add(s.labels.source);
    }
    return Array.from(ids).sort();
  }

  // Cumulative buckets [[le, count]...] of a histogram for the given labels, summed over
  // any other label (e.g. class).
  function buckets(scrape, name, filter) {
    const byLe = new Map();
    for (const s of series(scrape, name + "_bucket", filter)) {
      const le = s.labels.le === "+Inf" ? Infinity : parseFloat(s.labels.le);
      byLe.set(le, (byLe.get(le) || 0) + s.value);
    }
    return Array.from(byLe.entries()).sort(function (a, b) { return a[0] - b[0]; });
  }

  function minus(now, before) {
    if (!before || before.length !== now.length) return now;
    return now.map(function (b, i) { return [b[0], b[1] - before[i][1]]; });
  }

  // Prometheus' histogram_quantile: linear interpolation inside the bucket.
  function quantile(q, cum) {
    if (!cum.length) return null;
    const total = cum[cum.length - 1][1];
    if (total <= 0) return null;
    const rank = q * total;
    let lowerLe = 0;
    let lowerCount = 0;
    for (const [le, count] of cum) {
      if (count >= rank) {
        if (le === Infinity) return lowerLe;
        if (count === lowerCount) return le;
        return lowerLe + (le - lowerLe) * ((rank - lowerCount) / (count - lowerCount));
      }
      lowerLe = le;
      lowerCount = count;
    }
    return lowerLe;
  }

  // ------------------------------------------------------------------ drawing
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const k in attrs || {}) node.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return value.toFixed(digits);
  }

  function streamRow(scrape, source, latency) {
    const tr = el("tr", { "data-source": source });
    const state = ["running", "finished", "failed"].find(function (s) {
      return one(scrape, "tapetum_stream_state", { source: source, state: s }) === 1;
    }) || "–";
    const drift = one(scrape, "tapetum_drift_active", { source: source });
    const cells = [
      ["source", source, null],
      ["state", state, "state-" + state],
      ["fps", fmt(one(scrape, "tapetum_stream_fps", { source: source }), 1), "num"],
      ["processed", fmt(one(scrape, "tapetum_stream_frames_processed_total", { source: source }), 0), "num"],
      ["dropped", fmt(one(scrape, "tapetum_stream_frames_dropped_total", { source: source }), 0), "num"],
      ["corrupt", fmt(one(scrape, "tapetum_stream_frames_corrupt_total", { source: source }), 0), "num"],
      ["p50", fmt(latency.p50 === null ? null : latency.p50 * 1e3, 1), "num"],
      ["p99", fmt(latency.p99 === null ? null : latency.p99 * 1e3, 1),
        "num" + (latency.p99 !== null && latency.p99 > SLO_S ? " slo-bad" : "")],
      ["tracks", fmt(one(scrape, "tapetum_active_tracks", { source: source }), 0), "num"],
      ["drift", drift === null ? "off" : (drift === 1 ? "DRIFT" : "ok"),
        drift === 1 ? "drift-on" : "drift-off"],
    ];
    for (const [field, text, cls] of cells) {
      const td = el("td", { "data-field": field }, text);
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    return tr;
  }

  const CONFIDENCE_BOUNDS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

  // An empty histogram still shows its buckets (no detections yet is an answer too).
  function withBounds(cum, bounds) {
    if (cum.length) return cum;
    return bounds.map(function (b) { return [b, 0]; }).concat([[Infinity, 0]]);
  }

  function histogramSvg(cum) {
    const width = 220;
    const height = 90;
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", "hist");
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", String(height + 14));
    svg.setAttribute("role", "img");
    const counts = cum.filter(function (b) { return b[0] !== Infinity; }).map(function (b, i, arr) {
      return [b[0], b[1] - (i ? arr[i - 1][1] : 0)];
    });
    const peak = Math.max(1, ...counts.map(function (c) { return c[1]; }));
    const barW = width / Math.max(1, counts.length);
    counts.forEach(function (c, i) {
      const h = Math.round((c[1] / peak) * height);
      const rect = document.createElementNS(SVG_NS, "rect");
      rect.setAttribute("x", String(i * barW + 1));
      rect.setAttribute("y", String(height - h));
      rect.setAttribute("width", String(Math.max(1, barW - 2)));
      rect.setAttribute("height", String(h));
      const title = document.createElementNS(SVG_NS, "title");
      title.textContent = "≤ " + c[0] + ": " + c[1];
      rect.appendChild(title);
      svg.appendChild(rect);
      if (i % 2 === 1) {
        const label = document.createElementNS(SVG_NS, "text");
        label.setAttribute("x", String(i * barW + 2));
        label.setAttribute("y", String(height + 11));
        label.textContent = String(c[0]);
        svg.appendChild(label);
      }
    });
    return svg;
  }

  function detailCard(scrape, source) {
    const card = el("div", { class: "card", "data-source": source });
    card.appendChild(el("h3", {}, source));
    const conf = withBounds(
      buckets(scrape, "tapetum_detection_confidence", { source: source }), CONFIDENCE_BOUNDS);
    const total = conf.length ? conf[conf.length - 1][1] : 0;
    card.appendChild(el("div", { class: "dim" }, "confidence of " + total + " detections"));
    card.appendChild(histogramSvg(conf));
    const scores = series(scrape, "tapetum_drift_score", { source: source });
    if (scores.length) {
      card.appendChild(el("div", { class: "dim" }, "drift score (1 = threshold)"));
      const ul = el("ul", { class: "signals" });
      scores.sort(function (a, b) { return b.value - a.value; });
      for (const s of scores) {
        const on = one(scrape, "tapetum_drift_state", { source: source, signal: s.labels.signal }) === 1;
        const li = el("li", { "data-signal": s.labels.signal });
        if (on) li.className = "on";
        li.appendChild(el("span", {}, s.labels.signal));
        li.appendChild(el("span", { class: "num" }, fmt(s.value, 2)));
        ul.appendChild(li);
      }
      card.appendChild(ul);
    }
    return card;
  }

  function processCards(scrape, seconds) {
    const box = document.getElementById("process");
    box.replaceChildren();
    const cpu = one(scrape, "process_cpu_seconds_total");
    const rss = one(scrape, "process_resident_memory_bytes");
    let cpuShare = null;
    if (previous && cpu !== null && seconds > 0) {
      const before = one(previous.scrape, "process_cpu_seconds_total");
      if (before !== null) cpuShare = (cpu - before) / seconds;
    }
    const cards = [
      ["CPU (cores)", fmt(cpuShare, 2), "cpu"],
      ["memory (MiB)", fmt(rss === null ? null : rss / 1048576, 0), "rss"],
    ];
    if (one(scrape, "tapetum_gpu_available") === 1) {
      for (const s of series(scrape, "tapetum_gpu_utilization_ratio", {})) {
        cards.push(["GPU " + s.labels.gpu + " busy", fmt(s.value * 100, 0) + " %", "gpu" + s.labels.gpu]);
      }
    }
    for (const [title, value, field] of cards) {
      const card = el("div", { class: "card" });
      card.appendChild(el("h3", {}, title));
      card.appendChild(el("div", { class: "metric", "data-field": field }, value));
      box.appendChild(card);
    }
  }

  function render(scrape, now) {
    const seconds = previous ? (now - previous.at) / 1000 : 0;
    processCards(scrape, seconds);
    const tbody = document.querySelector("#streams tbody");
    const details = document.getElementById("details");
    tbody.replaceChildren();
    details.replaceChildren();
    const ids = sources(scrape);
    document.getElementById("empty").hidden = ids.length > 0;
    for (const source of ids) {
      const filter = { source: source, stage: "end_to_end" };
      const cum = buckets(scrape, "tapetum_stage_latency_seconds", filter);
      let window = cum;
      if (previous) {
        const delta = minus(cum, buckets(previous.scrape, "tapetum_stage_latency_seconds", filter));
        if (delta.length && delta[delta.length - 1][1] > 0) window = delta;
      }
      const latency = { p50: quantile(0.5, window), p99: quantile(0.99, window) };
      tbody.appendChild(streamRow(scrape, source, latency));
      details.appendChild(detailCard(scrape, source));
    }
  }

  // ------------------------------------------------------------------ polling
  let inFlight = false;

  function poll() {
    if (inFlight) return;
    inFlight = true;
    const headers = apiKey ? { "X-API-Key": apiKey } : {};
    fetch("/metrics", { headers: headers, cache: "no-store", credentials: "omit" })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          askForKey();
          throw new Error("the server wants an API key with the read scope");
        }
        if (!response.ok) throw new Error("/metrics answered " + response.status);
        return response.text();
      })
      .then(function (text) {
        const now = Date.now();
        const scrape = parse(text);
        render(scrape, now);
        previous = { scrape: scrape, at: now };
        polls += 1;
        const status = document.getElementById("status");
        status.textContent = "updated " + new Date(now).toLocaleTimeString() + " (" + polls + " polls)";
        status.setAttribute("data-polls", String(polls));
      })
      .catch(function (err) {
        document.getElementById("status").textContent = "not updating: " + err.message;
      })
      .finally(function () {
        inFlight = false;
      });
  }
})();
