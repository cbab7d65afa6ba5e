// Renders the server's own OpenAPI document as a reference page, and runs
// the "try it" form. No library and no network beyond this server: the page
// must work on closed networks.
(function () {
  "use strict";

  var OPENAPI = "/api/v1/openapi.json";
  var METHODS = ["get", "post", "put", "patch", "delete"];
  // The response headers a client cares about, in the order shown.
  var SHOWN_HEADERS = ["content-type", "x-request-id", "etag", "retry-after", "ratelimit-limit",
    "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy", "ratelimit"];
  var doc = null;
  var operations = []; // {id, method, path, op}

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "html") node.innerHTML = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  // The small part of Markdown the document's descriptions use: paragraphs,
  // `code` and **bold**. Text is escaped first, so nothing else can inject markup.
  function markdown(text) {
    return String(text || "").split(/\n\s*\n/).map(function (para) {
      var html = escapeHtml(para.trim())
        .replace(/`([^`]+)`/g, "<code>$1</code>")
        .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>");
      return "<p>" + html + "</p>";
    }).join("");
  }

  function pretty(value) { return JSON.stringify(value, null, 2); }

  // Follows `#/components/...` references.
  function deref(schema) {
    var seen = 0;
    while (schema && schema.$ref && seen++ < 20) {
      var parts = schema.$ref.replace(/^#\//, "").split("/");
      schema = parts.reduce(function (node, key) { return node ? node[key] : undefined; }, doc);
    }
    return schema || {};
  }

  // Flattens a schema into {properties, required}, merging allOf parts and
  // reading `oneOf [null, X]` as a nullable X.
  function flatten(schema) {
    schema = deref(schema);
    var out = { properties: {}, required: [] };
    (schema.allOf || []).forEach(function (part) {
      var f = flatten(part);
      Object.assign(out.properties, f.properties);
      out.required = out.required.concat(f.required);
    });
    Object.assign(out.properties, schema.properties || {});
    out.required = out.required.concat(schema.required || []);
    return out;
  }

  function typeName(schema) {
    var s = deref(schema);
    var nullable = false;
    if (schema && schema.oneOf) {
      var others = schema.oneOf.filter(function (x) { return x.type !== "null"; });
      nullable = others.length < schema.oneOf.length;
      if (others.length === 1) s = deref(others[0]);
    }
    var t;
    if (s.enum) t = s.enum.map(function (v) { return JSON.stringify(v); }).join(" | ");
    else if (Array.isArray(s.type)) {
      nullable = nullable || s.type.indexOf("null") >= 0;
      t = s.type.filter(function (x) { return x !== "null"; }).join(" | ");
    } else if (s.type === "array") t = typeName(s.items || {}) + "[]";
    else t = s.type || (s.properties || s.allOf ? "object" : "any");
    return nullable ? t + " | null" : t;
  }

  function description(schema) {
    if (!schema) return "";
    if (schema.description) return schema.description;
    if (schema.oneOf) {
      for (var i = 0; i < schema.oneOf.length; i++) {
        if (schema.oneOf[i].description) return schema.oneOf[i].description;
      }
    }
    return deref(schema).description || "";
  }

  // Rows for each field of an object schema, nested objects indented with dots.
  function fieldRows(schema, prefix, depth, rows) {
    var f = flatten(schema);
    Object.keys(f.properties).forEach(function (name) {
      var prop = f.properties[name];
      var full = prefix ? prefix + "." + name : name;
      rows.push({ name: full, type: typeName(prop), required: f.required.indexOf(name) >= 0, text: description(prop) });
      var inner = deref(prop);
      if (inner.type === "array") inner = deref(inner.items || {});
      if (depth < 2 && (inner.properties || inner.allOf)) fieldRows(inner, full, depth + 1, rows);
    });
    return rows;
  }

  function fieldTable(rows) {
    var body = el("tbody");
    rows.forEach(function (r) {
      var name = el("td", { "class": "name", text: r.name });
      if (r.required) name.appendChild(el("span", { "class": "req", text: "required" }));
      body.appendChild(el("tr", {}, [name, el("td", { "class": "type", text: r.type }), el("td", { html: markdown(r.text) })]));
    });
    return el("table", { "class": "plain" }, [
      el("thead", {}, [el("tr", {}, [el("th", { text: "Field" }), el("th", { text: "Type" }), el("th", { text: "Description" })])]),
      body,
    ]);
  }

  function exampleValue(content) {
    if (!content) return undefined;
    if (content.example !== undefined) return content.example;
    var names = Object.keys(content.examples || {});
    return names.length ? content.examples[names[0]].value : undefined;
  }

  function paramExample(p) {
    if (p.example !== undefined) return String(p.example);
    if (p.schema && p.schema.example !== undefined) return String(p.schema.example);
    return "";
  }

  function curlFor(entry) {
    var path = entry.path;
    var query = [];
    (entry.op.parameters || []).forEach(function (p) {
      var v = paramExample(p);
      if (p.in === "path") path = path.replace("{" + p.name + "}", encodeURIComponent(v || p.name));
      if (p.in === "query" && v) query.push(encodeURIComponent(p.name) + "=" + encodeURIComponent(v));
    });
    var url = location.origin + path + (query.length ? "?" + query.join("&") : "");
    var lines = ["curl -X " + entry.method.toUpperCase() + ' "' + url + '"'];
    if (needsKey(entry)) lines.push('  -H "x-api-key: sk_test_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"');
    var body = requestBody(entry);
    if (body) {
      var example = exampleValue(body);
      if (example !== undefined && example !== null) {
        lines.push('  -H "Content-Type: application/json"');
        lines.push("  -d '" + JSON.stringify(example) + "'");
      }
    }
    return lines.join(" \\\n");
  }

  function needsKey(entry) {
    var security = entry.op.security || doc.security || [];
    return security.some(function (req) { return Object.keys(req).length > 0; });
  }

  function requestBody(entry) {
    var rb = entry.op.requestBody;
    return rb && rb.content ? rb.content["application/json"] : null;
  }

  function renderEndpoint(entry) {
    var op = entry.op;
    var section = el("section", { "class": "endpoint", id: "op-" + entry.id, "data-operation": entry.id });
    var tryButton = el("button", { "class": "try-link", type: "button", text: "Try it" });
    tryButton.addEventListener("click", function () { selectOperation(entry.id, true); });
    section.appendChild(el("div", { "class": "endpoint-head" }, [
      el("span", { "class": "m " + entry.method, text: entry.method.toUpperCase() }),
      el("span", { "class": "path", text: entry.path }),
      needsKey(entry) ? null : el("span", { "class": "badge", text: "no key" }),
      tryButton,
    ]));
    section.appendChild(el("h3", { "class": "summary", text: op.summary || entry.id }));
    section.appendChild(el("div", { "class": "desc", html: markdown(op.description) }));

    var params = (op.parameters || []);
    if (params.length) {
      section.appendChild(el("h4", { text: "Parameters" }));
      var rows = params.map(function (p) {
        return { name: p.name, type: typeName(p.schema || {}) + " · " + p.in, required: !!p.required, text: p.description || "" };
      });
      section.appendChild(fieldTable(rows));
    }

    var body = requestBody(entry);
    if (body) {
      section.appendChild(el("h4", { text: "Request body" + (op.requestBody.required ? "" : " (optional)") }));
      if (op.requestBody.description) section.appendChild(el("div", { html: markdown(op.requestBody.description) }));
      var schema = body.schema || {};
      if (schema.oneOf) schema = schema.oneOf.filter(function (x) { return x.type !== "null"; })[0] || {};
      section.appendChild(fieldTable(fieldRows(schema, "", 0, [])));
    }

    var responses = op.responses || {};
    var ok = responses["200"];
    var okContent = ok && ok.content ? ok.content["application/json"] : null;
    if (okContent && okContent.schema) {
      var envelope = flatten(okContent.schema);
      if (envelope.properties.data) {
        section.appendChild(el("h4", { text: "Response data" }));
        section.appendChild(fieldTable(fieldRows(envelope.properties.data, "data", 0, [])));
      }
    }

    var codes = Object.keys(responses).filter(function (c) { return c !== "200"; });
    if (codes.length) {
      section.appendChild(el("h4", { text: "Other responses" }));
      var tbody = el("tbody");
      codes.forEach(function (code) {
        var parts = (responses[code].description || "").split("\n\n");
        var list = el("ul");
        parts[0].split("\n").filter(Boolean).forEach(function (line) { list.appendChild(el("li", { text: line })); });
        var cell = el("td", {}, [list]);
        if (parts[1]) cell.appendChild(el("div", { "class": "muted", html: markdown(parts.slice(1).join("\n\n")) }));
        tbody.appendChild(el("tr", {}, [el("td", { "class": "code c" + code.charAt(0), text: code }), cell]));
      });
      section.appendChild(el("table", { "class": "plain errors" }, [tbody]));
    }

    var cols = el("div", { "class": "cols" });
    cols.appendChild(el("div", {}, [el("h4", { text: "Request" }), el("pre", {}, [el("code", { text: curlFor(entry) })])]));
    var example = exampleValue(okContent);
    if (example === undefined && ok && ok.content) {
      var first = Object.keys(ok.content)[0];
      example = exampleValue(ok.content[first]);
    }
    cols.appendChild(el("div", {}, [
      el("h4", { text: "Response 200 OK" }),
      el("pre", {}, [el("code", { text: example === undefined ? "(see the fields above)" : pretty(example) })]),
    ]));
    section.appendChild(cols);
    return section;
  }

  function render() {
    var byTag = {};
    var tagOrder = (doc.tags || []).map(function (t) { return t.name; });
    Object.keys(doc.paths).forEach(function (path) {
      METHODS.forEach(function (method) {
        var op = doc.paths[path][method];
        if (!op) return;
        var entry = { id: op.operationId || method + path, method: method, path: path, op: op };
        operations.push(entry);
        var tag = (op.tags && op.tags[0]) || "Other";
        if (tagOrder.indexOf(tag) < 0) tagOrder.push(tag);
        (byTag[tag] = byTag[tag] || []).push(entry);
      });
    });
    var container = $("endpoints");
    container.innerHTML = "";
    var nav = $("nav-endpoints");
    tagOrder.forEach(function (tag) {
      var entries = byTag[tag];
      if (!entries) return;
      var info = (doc.tags || []).filter(function (t) { return t.name === tag; })[0] || {};
      var anchor = "tag-" + tag.toLowerCase().replace(/[^a-z0-9]+/g, "-");
      container.appendChild(el("h2", { "class": "group-title", id: anchor, text: tag }));
      if (info.description) container.appendChild(el("p", { "class": "group-desc", text: info.description }));
      nav.appendChild(el("div", { "class": "nav-group", text: tag }));
      entries.forEach(function (entry) {
        container.appendChild(renderEndpoint(entry));
        var link = el("a", { href: "#op-" + entry.id }, [
          el("span", { "class": "m " + entry.method, text: entry.method.toUpperCase() }),
          document.createTextNode(entry.op.summary || entry.path),
        ]);
        nav.appendChild(link);
      });
    });
    var select = $("try-op");
    operations.forEach(function (entry) {
      select.appendChild(el("option", { value: entry.id, text: entry.method.toUpperCase() + " " + entry.path }));
    });
    var preferred = operations.filter(function (e) { return e.id === "getServiceStatus"; })[0] || operations[0];
    if (preferred) selectOperation(preferred.id, false);
    document.body.setAttribute("data-ready", "true");
  }

  // --- Try it ---------------------------------------------------------------

  function current() {
    var id = $("try-op").value;
    return operations.filter(function (e) { return e.id === id; })[0];
  }

  function selectOperation(id, scroll) {
    $("try-op").value = id;
    var entry = current();
    var box = $("try-params");
    box.innerHTML = "";
    (entry.op.parameters || []).forEach(function (p) {
      if (p.in !== "path" && p.in !== "query") return;
      var input = el("input", { type: "text", id: "try-param-" + p.name, "data-param": p.name, "data-in": p.in, spellcheck: "false" });
      input.value = paramExample(p);
      if (p.in === "query") input.placeholder = "optional";
      box.appendChild(el("div", { "class": "row" }, [
        el("label", { "for": "try-param-" + p.name, text: p.name + (p.in === "query" ? " (query)" : "") }),
        input,
      ]));
    });
    var body = requestBody(entry);
    $("try-body-row").hidden = !body;
    var example = body ? exampleValue(body) : undefined;
    $("try-body").value = example === undefined || example === null ? "" : pretty(example);
    updateUrl();
    if (scroll) $("try-it").scrollIntoView();
  }

  function buildUrl(entry) {
    var path = entry.path;
    var query = [];
    Array.prototype.forEach.call(document.querySelectorAll("#try-params input"), function (input) {
      var name = input.getAttribute("data-param");
      if (input.getAttribute("data-in") === "path") {
        path = path.replace("{" + name + "}", encodeURIComponent(input.value.trim()));
      } else if (input.value.trim() !== "") {
        query.push(encodeURIComponent(name) + "=" + encodeURIComponent(input.value.trim()));
      }
    });
    return path + (query.length ? "?" + query.join("&") : "");
  }

  function updateUrl() {
    var entry = current();
    if (entry) $("try-url").textContent = entry.method.toUpperCase() + " " + buildUrl(entry);
  }

  function send(event) {
    event.preventDefault();
    var entry = current();
    if (!entry) return;
    var key = $("try-key").value.trim();
    try { sessionStorage.setItem("advps-try-key", key); } catch (e) { /* storage may be off */ }
    var headers = {};
    if (key) headers["x-api-key"] = key;
    var inm = $("try-inm").value.trim();
    if (inm) headers["If-None-Match"] = inm;
    var init = { method: entry.method.toUpperCase(), headers: headers, cache: "no-store" };
    var bodyText = $("try-body").value.trim();
    if (requestBody(entry) && bodyText) {
      headers["Content-Type"] = "application/json";
      init.body = bodyText;
    }
    var started = performance.now();
    $("try-send").disabled = true;
    fetch(buildUrl(entry), init).then(function (resp) {
      return resp.text().then(function (text) { show(resp, text, performance.now() - started); });
    }).catch(function (err) {
      showError(String(err));
    }).then(function () { $("try-send").disabled = false; });
  }

  function show(resp, text, ms) {
    $("try-result").hidden = false;
    var status = $("try-status");
    status.textContent = resp.status + " " + (resp.statusText || "");
    status.className = "status s" + String(resp.status).charAt(0);
    $("try-time").textContent = Math.round(ms) + " ms";
    var table = $("try-headers");
    table.innerHTML = "";
    SHOWN_HEADERS.forEach(function (name) {
      var value = resp.headers.get(name);
      if (value !== null) table.appendChild(el("tr", {}, [el("td", { text: name }), el("td", { text: value })]));
    });
    var etag = resp.headers.get("etag");
    if (etag) $("try-inm").placeholder = "e.g. " + etag;
    var body = text;
    try { body = pretty(JSON.parse(text)); } catch (e) { /* not JSON: show as is */ }
    $("try-response").textContent = body || "(no body)";
    document.body.setAttribute("data-try-status", String(resp.status));
  }

  function showError(message) {
    $("try-result").hidden = false;
    $("try-status").textContent = "Request failed";
    $("try-status").className = "status s5";
    $("try-headers").innerHTML = "";
    $("try-response").textContent = message;
  }

  function start() {
    $("base-url").textContent = location.origin;
    try { $("try-key").value = sessionStorage.getItem("advps-try-key") || ""; } catch (e) { /* ignore */ }
    $("try-op").addEventListener("change", function () { selectOperation(this.value, false); });
    $("try-params").addEventListener("input", updateUrl);
    $("try-form").addEventListener("submit", send);
    fetch(OPENAPI, { cache: "no-store" }).then(function (resp) {
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      return resp.json();
    }).then(function (json) {
      doc = json;
      render();
    }).catch(function (err) {
      $("loading").textContent = "Could not load " + OPENAPI + ": " + err;
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
