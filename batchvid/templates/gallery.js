// report.html's behaviour. Every element is built with createElement and textContent: no
// string from the data is ever parsed as HTML. Cards are rendered in chunks as the page is
// scrolled, so a run of 10,000 jobs opens as fast as one of ten.
(() => {
  "use strict";
  const DATA = JSON.parse(document.getElementById("batchvid-data").textContent);
  const JOBS = DATA.jobs;
  const SWEEPS = DATA.sweeps;
  const STATUSES = ["succeeded", "skipped", "failed", "pending"];
  const CHUNK = 36; // cards per rendering step
  const GRID_CARDS = 96; // cards of one sweep before "show more rows"
  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  const show = (v) => (typeof v === "string" ? v : JSON.stringify(v));

  // -- what is listed: a sweep once (at its first job), every other job on its own ----------
  const sweepOf = new Int32Array(JOBS.length).fill(-1);
  SWEEPS.forEach((s, i) => s.members.forEach((m) => { sweepOf[m] = i; }));
  const ITEMS = [];
  JOBS.forEach((job, i) => {
    if (sweepOf[i] < 0) ITEMS.push({ job: i });
    else if (SWEEPS[sweepOf[i]].members[0] === i) ITEMS.push({ sweep: sweepOf[i] });
  });
  const across = SWEEPS.map((s) => Math.max(0, s.axes.findIndex((a) => a.values.length > 1)));
  let haystacks = null; // built on first search

  const state = { status: "", model: "", text: "", failedFirst: false };
  let matched = new Uint8Array(JOBS.length);
  let queue = [];
  let next = 0;

  // -- one job --------------------------------------------------------------------------------
  function playIn(media, job) {
    if (!job.video || media.querySelector("video")) return;
    const focused = media.contains(document.activeElement); // the play button, from the keyboard
    const video = el("video");
    video.controls = true;
    video.autoplay = true;
    video.muted = true;
    video.loop = true;
    video.playsInline = true;
    video.preload = "auto";
    if (job.poster) video.poster = job.poster;
    // A file that is gone (or that a browser will not play from a file:// page) says so,
    // instead of an empty player.
    video.addEventListener("error", () => {
      const hint = location.protocol === "file:" ? " (or this browser plays no local video: try batchvid view --serve)" : "";
      media.replaceChildren(el("span", "none missing", "cannot play " + job.video + ": missing or unreadable" + hint));
    }, { once: true });
    video.src = job.video;
    media.replaceChildren(video);
    if (focused) video.focus();
  }

  function mediaBox(job) {
    const media = el("div", "media");
    if (job.poster) {
      const img = el("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = "first frame of " + job.id;
      img.src = job.poster;
      media.append(img);
    } else {
      media.append(el("span", "none", job.status === "failed" ? "no video" : job.video ? "no poster" : job.status));
    }
    if (job.video) {
      const play = el("button", "play");
      play.type = "button";
      play.title = "play " + job.video;
      play.setAttribute("aria-label", "play video");
      play.addEventListener("click", () => playIn(media, job));
      media.append(play);
    }
    return media;
  }

  function tags(job) {
    const box = el("div", "tags");
    const add = (text) => box.append(el("span", "tag", text));
    if (job.model) add(job.model);
    const p = job.params;
    const m = job.media;
    if (m && m.width) add(m.width + "×" + m.height);
    else if (p.size) add(p.size);
    if (m && m.fps) add(m.fps + " fps");
    else if (p.fps) add(p.fps + " fps");
    if (m && m.duration) add(m.duration + " s");
    if (m ? m.has_audio : p.with_audio) add("audio");
    return box;
  }

  function kv(pairs) {
    const dl = el("dl", "kv");
    for (const [k, v] of pairs) {
      if (v === undefined || v === null || v === "") continue;
      dl.append(el("dt", null, k), el("dd", null, show(v)));
    }
    return dl;
  }

  function details(job, media) {
    const box = el("details");
    box.append(el("summary", null, "details"));
    box.addEventListener("toggle", () => { if (box.open) playIn(media, job); }, { once: true });
    const pairs = Object.keys(job.params).sort().map((k) => ["param " + k, job.params[k]]);
    const m = job.media;
    if (m) {
      pairs.push(["probed", [m.codec, m.width + "×" + m.height, m.fps + " fps", m.duration + " s",
        m.has_audio ? "audio" : "no audio"].join(" · ")]);
    }
    if (job.sha256) pairs.push(["sha256", job.sha256.slice(0, 12)]);
    pairs.push(["task id", job.task_id], ["sample", job.sample]);
    if (job.bytes) pairs.push(["bytes", job.bytes]);
    if (job.quality && typeof job.quality === "object") {
      for (const k of Object.keys(job.quality).sort()) pairs.push(["quality " + k, job.quality[k]]);
    } else if (job.quality !== null && job.quality !== undefined) {
      pairs.push(["quality", job.quality]);
    }
    const dl = kv(pairs);
    const sha = job.sha256 && [...dl.children].find((n) => n.textContent === job.sha256.slice(0, 12));
    if (sha) sha.title = job.sha256;
    box.append(dl);
    return box;
  }

  function card(i, mini) {
    const job = JOBS[i];
    const node = el("article", "card st-" + job.status + (mini ? " mini" : ""));
    node.dataset.id = job.id;
    node.dataset.status = job.status;
    const media = mediaBox(job);
    const body = el("div", "body");
    const head = el("div", "head");
    // In a grid the row and column say which combination it is: the sample is what is left.
    const label = mini ? "sample " + job.sample : job.id;
    const name = el("code", null, label);
    if (mini) name.title = job.id;
    head.append(name, el("span", "badge st-" + job.status, job.status));
    body.append(head);
    if (mini) {
      const more = el("button", "more-btn", "details");
      more.type = "button";
      more.addEventListener("click", () => openDetail(i));
      body.append(more);
    } else {
      if (job.prompt) body.append(el("p", "prompt", job.prompt));
      if (job.prompt_original && job.prompt_original !== job.prompt) {
        const orig = el("p", "original");
        orig.append(el("b", null, "as written: "), document.createTextNode(job.prompt_original));
        body.append(orig);
      }
      body.append(tags(job));
      if (job.error) {
        const err = el("p", "err");
        err.append(el("b", null, job.error.kind || "error"), document.createTextNode(": " + (job.error.message || "")));
        body.append(err);
      }
      for (const w of job.warnings) body.append(el("p", "warn", "⚠ " + w));
      body.append(details(job, media));
    }
    if (job.error && mini) node.title = (job.error.kind || "") + ": " + (job.error.message || "");
    node.append(media, body);
    return node;
  }

  function openDetail(i) {
    const dialog = $("detail");
    const close = el("button", "close", "×");
    close.type = "button";
    close.setAttribute("aria-label", "close");
    close.addEventListener("click", () => dialog.close());
    dialog.replaceChildren(close, card(i, false));
    dialog.showModal();
  }

  // -- a sweep as a grid: one axis across, the others down, samples side by side -------------
  function sweepNode(si) {
    const sweep = SWEEPS[si];
    const section = el("section", "sweep");
    section.dataset.sweep = sweep.name;
    const head = el("div", "sweep-head");
    head.append(el("span", "kind", "sweep"), el("h2", null, sweep.name));
    if (sweep.template) head.append(el("span", "template", sweep.template));
    const members = sweep.members.filter((m) => matched[m]);
    head.append(el("span", "template", members.length + " of " + sweep.members.length + " jobs"));
    const axes = sweep.axes;
    if (axes.length > 1) {
      const label = el("label", null, "across");
      const select = el("select", "axis-select");
      select.setAttribute("aria-label", "axis across");
      axes.forEach((a, k) => {
        const option = el("option", null, a.name);
        option.value = String(k);
        option.selected = k === across[si];
        select.append(option);
      });
      select.addEventListener("change", () => {
        across[si] = Number(select.value);
        section.replaceWith(sweepNode(si));
      });
      label.append(select);
      head.append(label);
    }
    section.append(head, gridOf(si));
    return section;
  }

  function gridOf(si) {
    const sweep = SWEEPS[si];
    const axes = sweep.axes;
    const x = axes.length ? across[si] : -1;
    const columns = x >= 0 ? axes[x].values.map((_, k) => k) : [0];
    const down = axes.map((_, k) => k).filter((k) => k !== x);
    const rowKey = (coords) => down.map((k) => coords[k]).join(",");
    const rows = new Map();
    sweep.members.forEach((m, n) => {
      const coords = sweep.coords[n];
      const key = rowKey(coords);
      if (!rows.has(key)) rows.set(key, { coords, cells: new Map() });
      const col = x >= 0 ? coords[x] : 0;
      const cells = rows.get(key).cells;
      if (!cells.has(col)) cells.set(col, []);
      if (matched[m]) cells.get(col).push(m);
    });
    const ordered = [...rows.values()].sort((a, b) => {
      for (const k of down) if (a.coords[k] !== b.coords[k]) return a.coords[k] - b.coords[k];
      return 0;
    });
    const wrap = el("div", "grid-wrap");
    const grid = el("div", "grid");
    const samples = Math.max(1, ...ordered.flatMap((r) => [...r.cells.values()].map((c) => c.length)));
    grid.style.gridTemplateColumns = (down.length ? "max-content " : "") +
      "repeat(" + columns.length + ", minmax(" + (150 * samples) + "px, " + (230 * samples) + "px))";
    if (down.length) grid.append(el("div"));
    for (const c of columns) {
      const h = el("div", "colhead");
      if (x >= 0) h.append(document.createTextNode(axes[x].name + " "), el("b", null, axes[x].values[c]));
      else h.textContent = "samples";
      grid.append(h);
    }
    const perRow = columns.length * samples;
    let done = 0;
    const addRows = () => {
      const stop = Math.min(ordered.length, done + Math.max(1, Math.ceil(GRID_CARDS / perRow)));
      for (; done < stop; done++) addRow(ordered[done]);
      if (done < ordered.length) {
        const rest = el("button", "chip rest", "show " + (ordered.length - done) + " more rows");
        rest.type = "button";
        rest.addEventListener("click", () => { rest.remove(); addRows(); });
        wrap.append(rest);
      }
    };
    const addRow = (row) => {
      if (down.length) {
        const h = el("div", "rowhead");
        for (const k of down) {
          const line = el("span", null, axes[k].name + " ");
          line.append(el("b", null, axes[k].values[row.coords[k]]));
          h.append(line);
        }
        grid.append(h);
      }
      for (const c of columns) {
        const cell = el("div", "cell");
        const jobsHere = (row.cells.get(c) || []).slice().sort((a, b) => JOBS[a].sample - JOBS[b].sample);
        if (jobsHere.length) jobsHere.forEach((m) => cell.append(card(m, true)));
        else cell.append(el("div", "empty"));
        grid.append(cell);
      }
    };
    wrap.append(grid);
    addRows();
    return wrap;
  }

  // -- filtering and lazy rendering -----------------------------------------------------------
  function passesOthers(i) {
    const job = JOBS[i];
    if (state.model && job.model !== state.model) return false;
    if (state.text) {
      if (!haystacks) {
        haystacks = JOBS.map((j) => (j.id + "\n" + (j.prompt || "") + "\n" + (j.prompt_original || "")).toLowerCase());
      }
      if (!haystacks[i].includes(state.text)) return false;
    }
    return true;
  }

  function apply() {
    const counts = { all: 0, succeeded: 0, skipped: 0, failed: 0, pending: 0 };
    matched = new Uint8Array(JOBS.length);
    let shown = 0;
    for (let i = 0; i < JOBS.length; i++) {
      if (!passesOthers(i)) continue;
      counts.all++;
      counts[JOBS[i].status]++;
      if (!state.status || JOBS[i].status === state.status) { matched[i] = 1; shown++; }
    }
    for (const chip of $("status-filter").children) {
      chip.querySelector(".n").textContent = String(counts[chip.dataset.status || "all"]);
      chip.setAttribute("aria-pressed", String((chip.dataset.status || "") === state.status));
    }
    $("shown").textContent = shown === JOBS.length ? JOBS.length + " jobs" : shown + " of " + JOBS.length + " jobs shown";
    queue = ITEMS.filter((it) => (it.sweep !== undefined ? SWEEPS[it.sweep].members.some((m) => matched[m]) : matched[it.job]));
    if (state.failedFirst) {
      const failed = (it) => (it.sweep !== undefined ? SWEEPS[it.sweep].members : [it.job]).some((m) => matched[m] && JOBS[m].status === "failed");
      queue = queue.filter(failed).concat(queue.filter((it) => !failed(it)));
    }
    next = 0;
    const main = $("items");
    main.replaceChildren();
    if (!queue.length) main.append(el("p", "empty-state", "No job matches these filters."));
    renderMore();
    requestAnimationFrame(fill);
  }

  // Render while the end of the list is within reach of the viewport; the observer restarts
  // this when scrolling brings the end near again.
  function fill() {
    if (next >= queue.length) return;
    if ($("more").getBoundingClientRect().top < window.innerHeight + 1200) {
      renderMore();
      requestAnimationFrame(fill);
    }
  }

  function renderMore() {
    const main = $("items");
    const end = Math.min(queue.length, next + CHUNK);
    const fragment = document.createDocumentFragment();
    let budget = CHUNK;
    while (next < end && budget > 0) {
      const it = queue[next++];
      if (it.sweep !== undefined) {
        fragment.append(sweepNode(it.sweep));
        budget -= Math.min(GRID_CARDS, SWEEPS[it.sweep].members.length) / 4;
      } else {
        fragment.append(card(it.job, false));
        budget -= 1;
      }
    }
    main.append(fragment);
  }

  function setUp() {
    const chips = $("status-filter");
    for (const status of ["", ...STATUSES]) {
      const chip = el("button", "chip", status || "all");
      chip.type = "button";
      if (status) chip.dataset.status = status;
      chip.append(el("span", "n"));
      chip.addEventListener("click", () => { state.status = status; apply(); });
      chips.append(chip);
    }
    const models = [...new Set(JOBS.map((j) => j.model).filter(Boolean))].sort();
    for (const model of models) {
      const option = el("option", null, model);
      option.value = model;
      $("model-filter").append(option);
    }
    $("model-filter").addEventListener("change", (e) => { state.model = e.target.value; apply(); });
    let timer = 0;
    $("text-filter").addEventListener("input", (e) => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.text = e.target.value.trim().toLowerCase(); apply(); }, 120);
    });
    $("failed-first").addEventListener("change", (e) => { state.failedFirst = e.target.checked; apply(); });
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) fill();
    }, { rootMargin: "1200px 0px" }).observe($("more"));
    $("detail").addEventListener("click", (e) => { if (e.target === $("detail")) $("detail").close(); });
    $("detail").addEventListener("close", () => $("detail").replaceChildren());
  }

  setUp();
  apply();
  window.batchvidReady = performance.now();
  document.documentElement.dataset.ready = "true";
})();
