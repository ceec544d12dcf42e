// The playground: a form built from GET v1/models (each model's `capabilities`), POST v1/images/generations,
// the images shown as answered (presigned URL or base64 data: URI), and the same request as curl and openai-python.
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

  function headers(json) {
    const h = { accept: "application/json" };
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

  async function loadModels() {
    try {
      const response = await fetch(apiUrl("v1/models"), { headers: headers(false) });
      const body = await readJson(response);
      if (!response.ok) throw new Error(errorMessage(response, body));
      models = body.data;
      if (!models.length) throw new Error("this deployment serves no models");
      fields.model.replaceChildren(...models.map((m) => option(m.id, m.default ? `${m.id} (default)` : m.id)));
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
    return body;
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
    const body = requestBody();
    busy = true;
    $("generate").disabled = true;
    $("generate").textContent = "Generating…";
    setStatus("Generating…");
    const started = performance.now();
    try {
      const response = await fetch(apiUrl("v1/images/generations"), {
        method: "POST",
        headers: headers(true),
        body: JSON.stringify(body),
      });
      const answer = await readJson(response);
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
      setStatus(`${count} image${count === 1 ? "" : "s"} from ${body.model} in `, `${seconds.toFixed(2)} s`);
      $("status").dataset.seconds = seconds.toFixed(3);
    } catch (error) {
      showError(null, `The request did not complete: ${error.message}`);
      setStatus("");
    } finally {
      busy = false;
      $("generate").disabled = false;
      $("generate").textContent = "Generate";
    }
  }

  // ---- answers ----
  function imageMime(b64) {
    if (b64.startsWith("/9j/")) return "image/jpeg";
    if (b64.startsWith("UklGR")) return "image/webp";
    return "image/png";
  }

  function renderImages(answer, request) {
    const gallery = $("gallery");
    gallery.replaceChildren();
    answer.data.forEach((item, index) => {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      const src = item.url ?? `data:${imageMime(item.b64_json)};base64,${item.b64_json}`;
      img.alt = `image ${index + 1} for: ${request.prompt}`;
      img.dataset.format = item.url ? "url" : "b64_json";
      img.decoding = "async";
      const caption = document.createElement("figcaption");
      const meta = document.createElement("div");
      meta.className = "meta";
      const dims = document.createElement("span");
      dims.textContent = `#${index + 1} · ${img.dataset.format} · loading…`;
      const link = document.createElement("a");
      link.href = src;
      if (item.url) {
        link.textContent = "open";
        link.target = "_blank";
        link.rel = "noopener noreferrer";
      } else {
        link.textContent = "download";
        link.download = `image-${index + 1}.${imageMime(item.b64_json).split("/")[1]}`;
      }
      img.addEventListener("load", () => {
        dims.textContent = `#${index + 1} · ${img.dataset.format} · ${img.naturalWidth}×${img.naturalHeight}`;
        img.dataset.loaded = "true";
      });
      img.addEventListener("error", () => {
        dims.textContent = `#${index + 1} · ${img.dataset.format} · failed to load`;
        img.dataset.loaded = "error";
      });
      img.src = src;
      meta.append(dims, link);
      caption.append(meta);
      if (item.revised_prompt) {
        const revised = document.createElement("p");
        revised.className = "revised";
        revised.textContent = `Revised prompt: ${item.revised_prompt}`;
        caption.append(revised);
      }
      figure.append(img, caption);
      gallery.append(figure);
    });
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

  // ---- errors next to the field the API names ----
  function fieldFor(param) {
    if (!param) return null;
    const name = String(param).replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`); // responseFormat -> response_format
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
    const lines = [`curl -s ${shellQuote(apiUrl("v1/images/generations"))}`, `-H 'content-type: application/json'`];
    if (apiKey.value.trim()) lines.push(`-H "Authorization: Bearer $IMAGEGEN_API_KEY"`);
    lines.push(`-d ${shellQuote(JSON.stringify(body))}`);
    return lines.join(" \\\n  ");
  }

  function pythonSnippet(body) {
    const keyed = Boolean(apiKey.value.trim());
    const b64 = body.response_format === "b64_json";
    const out = [];
    if (b64) out.push("import base64");
    if (keyed) out.push("import os");
    if (out.length) out.push("");
    out.push("from openai import OpenAI", "");
    const client = [`base_url=${pyString(apiUrl("v1"))}`, keyed ? `api_key=os.environ["IMAGEGEN_API_KEY"]` : `api_key="unused"`];
    out.push(`client = OpenAI(${client.join(", ")})`);
    out.push("result = client.images.generate(");
    for (const [name, value] of Object.entries(body)) {
      out.push(`    ${name}=${typeof value === "number" ? value : pyString(String(value))},`);
    }
    out.push(")");
    if (b64) {
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

  loadModels();
})();
