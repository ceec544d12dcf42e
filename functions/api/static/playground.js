// The playground: a form built from GET v1/models (each model's `capabilities`), POST v1/images/generations,
// the images shown as answered (presigned URL or base64 data: URI), and the same request as curl and openai-python.
// With "Partial images" set, the request is `stream: true`: its server-sent events are read as they arrive and each
// partial image is shown until the completed one replaces it; a deployment that cannot stream (its 400 names
// `stream`, code unsupported_parameter) gets the same request without streaming, and the control is turned off.
// "This month" sums the key's usage of the current UTC month from GET v1/organization/usage/images, read at load,
// when the key changes and after each generation.
// Plain DOM (no innerHTML: the page's CSP enforces Trusted Types), no framework, no build step.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORAGE = "imagegen.apiKey";
  const CUSTOM = "__custom__";

  // The API lives next to this page: GET / is served at ".../prod/" (or ".../prod" without the slash, where a plain
  // relative URL would resolve one level too high) or at "/" locally and on a custom domain.
  const pageBase = new URL(location.pathname.endsWith("/") ? location.pathname : `${location.pathname}/`, location.origin);
  const apiUrl = (path) => new URL(path, pageBase).href;

  const form = $("form");
  const fields = {
    prompt: $("prompt"),
    model: $("model"),
    size: $("size"),
    n: $("n"),
    quality: $("quality"),
    style: $("style"),
    response_format: $("response_format"),
    output_format: $("output_format"),
    partial_images: $("partial_images"),
  };
  const customSize = $("custom-size");
  const apiKey = $("api-key");
  let models = [];
  let busy = false;

  // ---- API key: this tab only ----
  apiKey.value = sessionStorage.getItem(KEY_STORAGE) || "";
  apiKey.addEventListener("input", () => {
    const key = apiKey.value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    renderSnippets();
  });

  function headers(json, stream = false) {
    const h = { accept: stream ? "text/event-stream" : "application/json" };
    if (json) h["content-type"] = "application/json";
    const key = apiKey.value.trim();
    if (key) h.Authorization = `Bearer ${key}`;
    return h;
  }

  // ---- form built from capabilities ----
  function option(value, label) {
    const el = document.createElement("option");
    el.value = value;
    el.textContent = label ?? value;
    return el;
  }

  function fill(select, values, { blank, selected } = {}) {
    const previous = select.value;
    select.replaceChildren();
    if (blank) select.append(option("", blank));
    for (const value of values) select.append(option(value));
    const keep = [previous, selected].find((v) => v !== undefined && [...select.options].some((o) => o.value === v));
    select.value = keep ?? select.options[0]?.value ?? "";
  }

  function show(name, visible) {
    fields[name].closest(".field").hidden = !visible;
  }

  function currentModel() {
    return models.find((m) => m.id === fields.model.value);
  }

  function applyCapabilities() {
    const model = currentModel();
    if (!model) return;
    const caps = model.capabilities;
    const sizeWasCustom = fields.size.value === CUSTOM;
    fill(fields.size, caps.sizes, { selected: caps.default_size });
    if (caps.custom_sizes) {
      fields.size.append(option(CUSTOM, "custom…"));
      if (sizeWasCustom) fields.size.value = CUSTOM;
    }
    $("custom-size-hint").textContent = caps.custom_sizes ?? "";
    fields.n.max = String(caps.max_n);
    if (Number(fields.n.value) > caps.max_n || caps.max_n <= 1) fields.n.value = String(caps.max_n);
    fields.n.disabled = caps.max_n <= 1;
    fill(fields.quality, caps.qualities, { blank: "default" });
    show("quality", caps.qualities.length > 0);
    fill(fields.style, caps.styles, { blank: "default" });
    show("style", caps.styles.length > 0);
    fill(fields.response_format, caps.response_formats, { selected: caps.default_response_format });
    fields.response_format.disabled = caps.response_formats.length <= 1;
    fill(fields.output_format, caps.output_formats, { blank: "default" });
    show("output_format", caps.output_formats.length > 1);
    $("prompt-count").dataset.max = String(caps.max_prompt_chars);
    updateCustomSize();
    updateCount();
  }

  function updateCustomSize() {
    const custom = fields.size.value === CUSTOM;
    customSize.hidden = !custom;
    $("custom-size-hint").hidden = !custom;
  }

  function updateCount() {
    const max = $("prompt-count").dataset.max;
    $("prompt-count").textContent = max ? `${fields.prompt.value.length} / ${max}` : "";
  }

  // A route (owned_by "route") names its models in the order they are tried.
  function modelLabel(m) {
    const label = m.route ? `${m.id} (route: ${m.route.join(" → ")})` : m.id;
    return m.default ? `${label} (default)` : label;
  }

  async function loadModels() {
    try {
      const response = await fetch(apiUrl("v1/models"), { headers: headers(false) });
      const body = await readJson(response);
      if (!response.ok) throw new Error(errorMessage(response, body));
      // The playground generates: a model that only edits (capabilities.generations false) is not offered.
      models = body.data.filter((m) => m.capabilities.generations !== false);
      if (!models.length) throw new Error("this deployment serves no models");
      fields.model.replaceChildren(...models.map((m) => option(m.id, modelLabel(m))));
      fields.model.value = (models.find((m) => m.default) ?? models[0]).id;
      fields.model.disabled = false;
      $("generate").disabled = false;
      applyCapabilities();
      setStatus("Ready.");
    } catch (error) {
      setStatus("");
      showError(null, `Could not load the models: ${error.message}`);
    }
    renderSnippets();
  }

  // ---- the request ----
  function requestBody() {
    const model = currentModel();
    const body = { model: fields.model.value, prompt: fields.prompt.value };
    if (!model) return body;
    body.n = Number(fields.n.value);
    body.size = fields.size.value === CUSTOM ? customSize.value.trim() : fields.size.value;
    for (const name of ["quality", "style", "output_format"]) {
      if (!fields[name].closest(".field").hidden && fields[name].value) body[name] = fields[name].value;
    }
    body.response_format = fields.response_format.value;
    if (!fields.partial_images.disabled && fields.partial_images.value !== "") {
      body.stream = true;
      body.partial_images = Number(fields.partial_images.value);
    }
    return body;
  }

  function post(body) {
    return fetch(apiUrl("v1/images/generations"), {
      method: "POST",
      headers: headers(true, body.stream),
      body: JSON.stringify(body),
    });
  }

  // The API's answer to `stream: true` where the function does not run the streaming runtime (functions/api/app.py).
  function refusesStreaming(answer) {
    return answer?.error?.param === "stream" && answer.error.code === "unsupported_parameter";
  }

  function streamingUnavailable(message) {
    fields.partial_images.value = "";
    fields.partial_images.disabled = true;
    $("partial-images-hint").textContent = `Not available here: ${message}`;
  }

  async function readJson(response) {
    const text = await response.text();
    try {
      return JSON.parse(text);
    } catch {
      return { message: text.slice(0, 300) };
    }
  }

  function errorMessage(response, body) {
    const message = body?.error?.message ?? body?.message ?? response.statusText;
    return `${response.status}: ${message || "request failed"}`;
  }

  async function generate(event) {
    event.preventDefault();
    if (busy) return;
    clearErrors();
    let body = requestBody();
    busy = true;
    $("generate").disabled = true;
    $("generate").textContent = "Generating…";
    setStatus("Generating…");
    const started = performance.now();
    try {
      let response = await post(body);
      let answer;
      if (body.stream && response.status === 400) {
        answer = await readJson(response);
        if (refusesStreaming(answer)) {
          // Nothing was made: the same request, answered as one JSON body.
          streamingUnavailable(answer.error.message);
          body = requestBody();
          renderSnippets();
          response = await post(body);
          answer = undefined;
        }
      }
      if (body.stream && response.ok && isEventStream(response)) {
        await showStream(response, body, started);
        return;
      }
      answer ??= await readJson(response);
      const seconds = (performance.now() - started) / 1000;
      if (!response.ok) {
        const error = answer?.error ?? {};
        showError(error.param ?? null, error.message ?? errorMessage(response, answer));
        $("gallery").replaceChildren();
        setStatus(`Failed with ${response.status} after ${seconds.toFixed(2)} s.`);
        return;
      }
      renderImages(answer, body);
      const count = answer.data.length;
      // x-imagegen-model: the model that made them (for a route, the one that served it).
      const servedBy = response.headers.get("x-imagegen-model") ?? body.model;
      setStatus(`${count} image${count === 1 ? "" : "s"} from ${servedBy} in `, `${seconds.toFixed(2)} s`);
      $("status").dataset.seconds = seconds.toFixed(3);
    } catch (error) {
      showError(null, `The request did not complete: ${error.message}`);
      setStatus("");
    } finally {
      busy = false;
      $("generate").disabled = false;
      $("generate").textContent = "Generate";
      refreshUsage();
    }
  }

  // ---- answers ----
  function imageMime(b64) {
    if (b64.startsWith("/9j/")) return "image/jpeg";
    if (b64.startsWith("UklGR")) return "image/webp";
    return "image/png";
  }

  const dataUri = (b64) => `data:${imageMime(b64)};base64,${b64}`;

  // One image's figure in the gallery; `showImage` puts an image in it (a stream's partials, then its final, in turn).
  function addFigure(index, request) {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = `image ${index + 1} for: ${request.prompt}`;
    img.decoding = "async";
    const caption = document.createElement("figcaption");
    const meta = document.createElement("div");
    meta.className = "meta";
    const dims = document.createElement("span");
    const link = document.createElement("a");
    const slot = { figure, img, dims, link, caption, label: "" };
    img.addEventListener("load", () => {
      dims.textContent = `${slot.label} · ${img.naturalWidth}×${img.naturalHeight}`;
      img.dataset.loaded = "true";
    });
    img.addEventListener("error", () => {
      dims.textContent = `${slot.label} · failed to load`;
      img.dataset.loaded = "error";
    });
    meta.append(dims, link);
    caption.append(meta);
    figure.append(img, caption);
    $("gallery").append(figure);
    return slot;
  }

  function showImage(slot, { src, format, label, url, b64, name }) {
    const { img, dims, link } = slot;
    slot.label = label;
    img.dataset.format = format;
    delete img.dataset.loaded;
    dims.textContent = `${label} · loading…`;
    if (url) {
      link.href = url;
      link.textContent = "open";
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      link.removeAttribute("download");
    } else {
      link.href = dataUri(b64);
      link.textContent = "download";
      link.download = `${name}.${imageMime(b64).split("/")[1]}`;
      link.removeAttribute("target");
    }
    img.src = src;
  }

  function renderImages(answer, request) {
    $("gallery").replaceChildren();
    answer.data.forEach((item, index) => {
      const slot = addFigure(index, request);
      const format = item.url ? "url" : "b64_json";
      const src = item.url ?? dataUri(item.b64_json);
      const label = `#${index + 1} · ${format}`;
      showImage(slot, { src, format, label, url: item.url, b64: item.b64_json, name: `image-${index + 1}` });
      if (item.revised_prompt) {
        const revised = document.createElement("p");
        revised.className = "revised";
        revised.textContent = `Revised prompt: ${item.revised_prompt}`;
        slot.caption.append(revised);
      }
    });
  }

  // ---- streamed answers (server-sent events, OpenAI's image stream events) ----
  function isEventStream(response) {
    return (response.headers.get("content-type") ?? "").startsWith("text/event-stream");
  }

  // The events of an SSE body as they complete, parsed as the SSE spec says: lines end at CRLF, LF or CR (a CR at
  // the end of a chunk may be half a CRLF), `event:` and `data:` fields (one space after the colon dropped, data
  // lines joined by newlines), `:` comments and other fields ignored, an event dispatched at a blank line (none
  // without data), and what is pending when the body ends dropped. TextDecoderStream joins UTF-8 split across
  // chunks and drops a BOM.
  async function* sseEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    const lineEnd = /\r\n|\n|\r(?=[\s\S])/g;
    let pending = "";
    let scanned = 0;
    let type = "";
    let data = [];
    const field = (line) => {
      if (line === "") {
        const event = data.length ? { type: type || "message", data: data.join("\n") } : null;
        type = "";
        data = [];
        return event;
      }
      if (line.startsWith(":")) return null;
      const colon = line.indexOf(":");
      const name = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "event") type = value;
      else if (name === "data") data.push(value);
      return null;
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          if (pending.endsWith("\r")) {
            const event = field(pending.slice(0, -1));
            if (event) yield event;
          }
          return;
        }
        pending += value;
        lineEnd.lastIndex = scanned;
        const lines = [];
        let start = 0;
        for (let match = lineEnd.exec(pending); match; match = lineEnd.exec(pending)) {
          lines.push(pending.slice(start, match.index));
          start = lineEnd.lastIndex;
        }
        pending = pending.slice(start);
        scanned = Math.max(0, pending.length - 1);
        for (const line of lines) {
          const event = field(line);
          if (event) yield event;
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  async function showStream(response, request, started) {
    $("gallery").replaceChildren();
    const slots = [];
    const slot = (index) => (slots[index] ??= addFigure(index, request));
    const seconds = () => ((performance.now() - started) / 1000).toFixed(2);
    let partials = 0;
    let completed = 0;
    let failure = null;
    setStatus("Streaming…");
    for await (const message of sseEvents(response.body)) {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        failure = { message: `the stream sent an event that is not JSON (${message.type})` };
        break;
      }
      const type = event?.type ?? message.type;
      if (type === "error" || message.type === "error" || event?.error) {
        failure = event?.error ?? { message: "the stream failed" };
        break;
      }
      if (type.endsWith(".partial_image")) {
        // Partial images are of the first image (OpenAI's events name no image); the completed ones come in order.
        const index = event.partial_image_index;
        const target = slot(0);
        target.figure.dataset.stage = "partial";
        target.img.dataset.stage = "partial";
        target.img.dataset.partialIndex = String(index);
        const label = `#1 · partial ${index + 1} of ${request.partial_images}`;
        showImage(target, { src: dataUri(event.b64_json), format: "stream", label, b64: event.b64_json, name: `partial-${index + 1}` });
        partials += 1;
        setStatus(`Partial image ${index + 1} of ${request.partial_images} after `, `${seconds()} s`);
      } else if (type.endsWith(".completed")) {
        const index = completed;
        const target = slot(index);
        target.figure.dataset.stage = "final";
        target.img.dataset.stage = "final";
        delete target.img.dataset.partialIndex;
        const label = `#${index + 1} · stream`;
        const b64 = event.b64_json;
        showImage(target, { src: dataUri(b64), format: "stream", label, url: event.url, b64, name: `image-${index + 1}` });
        completed += 1;
        setStatus(`${completed} of ${request.n} image${request.n === 1 ? "" : "s"} after `, `${seconds()} s`);
      }
    }
    if (!failure && completed < request.n) failure = { message: `the stream ended after ${completed} of ${request.n} images` };
    if (failure) {
      // Nothing is stored when a stream fails: its partial images go with it.
      for (const { figure } of slots.filter(Boolean)) if (figure.dataset.stage !== "final") figure.remove();
      showError(failure.param ?? null, failure.message ?? "the stream failed");
      setStatus(`Failed mid-stream after ${seconds()} s.`);
      return;
    }
    const note = `streamed with ${partials} partial image${partials === 1 ? "" : "s"}`;
    setStatus(`${completed} image${completed === 1 ? "" : "s"} from ${request.model} (${note}) in `, `${seconds()} s`);
    $("status").dataset.seconds = seconds();
  }

  function setStatus(text, strong) {
    const status = $("status");
    status.replaceChildren(text);
    if (strong) {
      const el = document.createElement("strong");
      el.textContent = strong;
      status.append(el, ".");
    }
  }

  // ---- this month's usage (GET v1/organization/usage/images, OpenAI's Usage API shape plus `cost`) ----
  const USAGE_PAGES = 12; // a month is one page of 1d buckets (limit 31); more would be a cursor that never ends
  let usageRead = 0; // the latest read: an older one finishing later does not overwrite it
  let usageRecorded = true; // false after the deployment's 404 usage_not_recorded: it will not start recording

  // The caller's id as the API names it (imagegen.auth.caller_scope: "key-" and 16 hex of the key's SHA-256,
  // "anonymous" without a key), to read only this key's usage even when the key may read every caller's
  // (USAGE_ADMIN_KEYS). Null where WebCrypto is unavailable (not a secure context): the API's own scoping then.
  async function callerId() {
    if (!crypto.subtle) return null;
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(apiKey.value.trim() || "anonymous"));
    const hex = [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
    return `key-${hex.slice(0, 16)}`;
  }

  function monthStart(now = new Date()) {
    return Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) / 1000;
  }

  // Every bucket of the month, following next_page while has_more.
  async function readUsage() {
    const query = new URLSearchParams({ start_time: String(monthStart()), bucket_width: "1d", limit: "31" });
    const id = await callerId();
    if (id) query.append("api_key_ids", id);
    const buckets = [];
    for (let page = 0; page < USAGE_PAGES; page += 1) {
      const response = await fetch(apiUrl(`v1/organization/usage/images?${query}`), { headers: headers(false) });
      const body = await readJson(response);
      if (!response.ok) return { response, body };
      buckets.push(...(body.data ?? []));
      if (!body.has_more || !body.next_page) return { buckets };
      query.set("page", body.next_page);
    }
    throw new Error("the usage pages did not end");
  }

  // USD as a person reads it: cents from $1, up to 4 decimals below (an image can cost less than a cent).
  function formatUsd(value) {
    if (value > 0 && value < 0.00005) return "< $0.0001";
    const digits = value >= 1 ? 2 : 4;
    const format = { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: digits };
    return new Intl.NumberFormat("en-US", format).format(value);
  }

  function usageTotals(buckets) {
    const totals = { images: 0, requests: 0, usd: 0, priced: true };
    for (const result of buckets.flatMap((bucket) => bucket.results ?? [])) {
      totals.images += result.images ?? 0;
      totals.requests += result.num_model_requests ?? 0;
      if (result.cost == null) totals.priced = false;
      else totals.usd += Number(result.cost.value);
    }
    return totals;
  }

  function showUsage(state, { totals, note } = {}) {
    const panel = $("usage");
    panel.hidden = state === "off";
    $("usage-off").hidden = state !== "off";
    panel.dataset.state = state;
    $("usage-totals").hidden = !totals;
    $("usage-note").hidden = !note;
    $("usage-note").textContent = note ?? "";
    if (!totals) {
      for (const name of ["images", "requests", "usd"]) delete panel.dataset[name];
      return;
    }
    panel.dataset.images = String(totals.images);
    panel.dataset.requests = String(totals.requests);
    panel.dataset.usd = totals.priced ? String(totals.usd) : "unknown";
    $("usage-images").textContent = totals.images.toLocaleString("en-US");
    $("usage-requests").textContent = totals.requests.toLocaleString("en-US");
    const cost = $("usage-cost");
    cost.textContent = totals.priced ? formatUsd(totals.usd) : "unknown";
    cost.title = totals.priced ? `${totals.usd} USD` : "a request of this month had no price: a partial sum would read as a total";
  }

  async function refreshUsage() {
    if (!usageRecorded) return;
    const read = (usageRead += 1);
    let answer;
    try {
      answer = await readUsage();
    } catch (error) {
      answer = { error };
    }
    if (read !== usageRead) return;
    const { buckets, response, body, error } = answer;
    if (buckets) {
      showUsage("ok", { totals: usageTotals(buckets) });
    } else if (response?.status === 404 && body?.error?.code === "usage_not_recorded") {
      usageRecorded = false;
      showUsage("off");
    } else if (response?.status === 401 || response?.status === 403) {
      const why = apiKey.value.trim() ? "this key may not read it" : "enter an API key";
      showUsage("key", { note: `An API key is needed to read usage: ${why} (${errorMessage(response, body)}).` });
    } else {
      showUsage("error", { note: `Usage could not be read: ${response ? errorMessage(response, body) : error.message}` });
    }
  }

  // ---- errors next to the field the API names ----
  function fieldFor(param) {
    if (!param) return null;
    const snake = String(param).replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`); // responseFormat -> response_format
    const name = snake === "stream" ? "partial_images" : snake; // the control that sends stream: true
    const field = document.querySelector(`.field[data-param="${CSS.escape(name)}"]`);
    return field && !field.hidden ? field : null;
  }

  function showError(param, message) {
    const field = fieldFor(param);
    if (field) {
      const error = field.querySelector(".error");
      error.textContent = message;
      error.hidden = false;
      const control = field.querySelector("textarea, input:not([hidden]), select");
      control?.setAttribute("aria-invalid", "true");
      control?.focus();
      return;
    }
    const general = $("form-error");
    general.textContent = param ? `${message} (${param})` : message;
    general.hidden = false;
  }

  function clearErrors() {
    for (const error of document.querySelectorAll(".error")) {
      error.hidden = true;
      error.textContent = "";
    }
    for (const control of document.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
  }

  function clearFieldError(event) {
    const field = event.target.closest(".field");
    if (!field) return;
    field.querySelector(".error").hidden = true;
    event.target.removeAttribute("aria-invalid");
  }

  // ---- the same request, to copy ----
  const shellQuote = (text) => `'${text.replace(/'/g, `'\\''`)}'`;
  const pyString = (text) => JSON.stringify(text); // JSON string escapes are valid Python string escapes

  function curlSnippet(body) {
    const flags = body.stream ? "-sN" : "-s"; // -N: print the events as they arrive
    const lines = [`curl ${flags} ${shellQuote(apiUrl("v1/images/generations"))}`, `-H 'content-type: application/json'`];
    if (apiKey.value.trim()) lines.push(`-H "Authorization: Bearer $IMAGEGEN_API_KEY"`);
    lines.push(`-d ${shellQuote(JSON.stringify(body))}`);
    return lines.join(" \\\n  ");
  }

  function pythonSnippet(body) {
    const keyed = Boolean(apiKey.value.trim());
    const b64 = body.response_format === "b64_json" || body.stream;
    const out = [];
    if (b64) out.push("import base64");
    if (keyed) out.push("import os");
    if (out.length) out.push("");
    out.push("from openai import OpenAI", "");
    const client = [`base_url=${pyString(apiUrl("v1"))}`, keyed ? `api_key=os.environ["IMAGEGEN_API_KEY"]` : `api_key="unused"`];
    out.push(`client = OpenAI(${client.join(", ")})`);
    out.push(`${body.stream ? "stream" : "result"} = client.images.generate(`);
    for (const [name, value] of Object.entries(body)) {
      const boolean = value ? "True" : "False";
      const literal = typeof value === "number" ? value : typeof value === "boolean" ? boolean : pyString(String(value));
      out.push(`    ${name}=${literal},`);
    }
    out.push(")");
    if (body.stream) {
      const ext = body.output_format ?? "png";
      out.push("images = 0");
      out.push("for event in stream:");
      out.push('    if event.type == "image_generation.partial_image":');
      out.push(`        path = f"partial-{event.partial_image_index}.${ext}"`);
      out.push("    else:  # image_generation.completed");
      out.push(`        path = f"image-{images}.${ext}"`);
      out.push("        images += 1");
      out.push('    with open(path, "wb") as file:');
      out.push("        file.write(base64.b64decode(event.b64_json))");
      out.push("    print(path)");
    } else if (b64) {
      const ext = body.output_format ?? "png";
      out.push("for index, image in enumerate(result.data):");
      out.push(`    with open(f"image-{index}.${ext}", "wb") as file:`);
      out.push("        file.write(base64.b64decode(image.b64_json))");
    } else {
      out.push("for image in result.data:", "    print(image.url)");
    }
    return out.join("\n");
  }

  function renderSnippets() {
    const body = requestBody();
    $("snippet-curl").firstElementChild.textContent = curlSnippet(body);
    $("snippet-python").firstElementChild.textContent = pythonSnippet(body);
  }

  function selectTab(tab) {
    for (const name of ["curl", "python"]) {
      const selected = name === tab;
      $(`tab-${name}`).setAttribute("aria-selected", String(selected));
      $(`snippet-${name}`).hidden = !selected;
    }
  }

  async function copySnippet() {
    const visible = document.querySelector(".snippets pre:not([hidden]) code");
    const button = $("copy");
    try {
      await navigator.clipboard.writeText(visible.textContent);
      button.textContent = "Copied";
    } catch {
      const range = document.createRange();
      range.selectNodeContents(visible);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      button.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => {
      button.textContent = "Copy";
    }, 1500);
  }

  // ---- wiring ----
  fields.model.addEventListener("change", applyCapabilities);
  fields.size.addEventListener("change", updateCustomSize);
  fields.prompt.addEventListener("input", updateCount);
  form.addEventListener("input", clearFieldError);
  form.addEventListener("change", clearFieldError);
  form.addEventListener("input", renderSnippets);
  form.addEventListener("change", renderSnippets);
  form.addEventListener("submit", generate);
  fields.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  $("tab-curl").addEventListener("click", () => selectTab("curl"));
  $("tab-python").addEventListener("click", () => selectTab("python"));
  $("copy").addEventListener("click", copySnippet);
  apiKey.addEventListener("change", refreshUsage);

  loadModels();
  refreshUsage();
})();
