// check_compose.js ROOT POSTERN_BIN: validates deploy/compose.yaml and
// deploy/prometheus.yml offline.
//
// 1. compose.yaml against the Compose Specification's JSON schema (the copy bundled in
//    the npm package dclint), merge keys resolved as Compose resolves them; then dclint's
//    own error-level rules (`dclint -q`).
// 2. prometheus.yml against a small schema written here for the parts we use (there is
//    no offline Prometheus config schema on npm; promtool is in Debian's 96 MB
//    prometheus package, which would also start a server on install): top-level keys,
//    scrape_configs entries, durations, host:port targets.
// 3. Postern's contract: the relay's mounted config passes `postern check-config`, its
//    next hop is the sink's fixed address and listen port, the published port is the
//    listener's, Prometheus scrapes the admin port, the spool is a named volume at
//    spool_dir, files and build context exist, the stop grace period covers the drain.
// Exit status 1 with one FAIL line per problem.
"use strict";

const fs = require("fs");
const path = require("path");
const { spawnSync } = require("child_process");
const lib = require("./lib");

const [root, postern] = process.argv.slice(2);
if (!root || !postern) {
  console.error("usage: check_compose.js ROOT POSTERN_BIN");
  process.exit(2);
}
const c = new lib.Checker("check_compose");
const Ajv = lib.requireModule("ajv").default;
const composeFile = path.join(root, "deploy", "compose.yaml");
const composeDir = path.dirname(composeFile);
const promFile = path.join(root, "deploy", "prometheus.yml");
const W = "deploy/compose.yaml";

function ajvErrors(errors) {
  return (errors || []).map((e) => {
    const extra = e.params && e.params.additionalProperty ? ` "${e.params.additionalProperty}"` : "";
    return `${e.instancePath || "/"} ${e.message}${extra}`;
  });
}

// Compose durations: "30s", "1m30s", "1h".
function seconds(d) {
  const m = /^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?$/.exec(String(d || ""));
  return m && m[0] ? (Number(m[1] || 0) * 3600 + Number(m[2] || 0) * 60 + Number(m[3] || 0)) : NaN;
}

// ---- 1. Compose schema and dclint ---------------------------------------------------
const [compose] = lib.loadYamlDocuments(c, composeFile);
const schema = require(path.join(__dirname, "node_modules", "dclint", "schemas", "compose.schema.json"));
// The copy in dclint 2.x (the last release that runs on Debian 12's Node.js 18) still names
// its subschemas with draft-04's "id", which Ajv 8 refuses; they are only names, and no
// $ref uses them.
(function dropIds(node) {
  if (Array.isArray(node)) node.forEach(dropIds);
  else if (node && typeof node === "object") {
    if (typeof node.id === "string") delete node.id;
    Object.values(node).forEach(dropIds);
  }
})(schema);
const ajv = new Ajv({ allErrors: true, strict: false, validateSchema: false });
// That schema's own format for `expose` entries: a port or a range, with a protocol.
ajv.addFormat("expose", /^[0-9]{1,5}(-[0-9]{1,5})?(\/(tcp|udp|sctp))?$/);
const validCompose = ajv.compile(schema);
c.expect(compose && validCompose(compose), W, `schema: ${ajvErrors(validCompose.errors).join("; ")}`);

const dclint = spawnSync(process.execPath,
  [path.join(__dirname, "node_modules", "dclint", "bin", "dclint.cjs"), "-q", "--no-color", composeFile],
  { encoding: "utf8", env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" } });
c.expect(dclint.status === 0, W, `dclint: ${(dclint.stdout + dclint.stderr).trim()}`);

// ---- 2. prometheus.yml --------------------------------------------------------------
const duration = { type: "string", pattern: "^([0-9]+(ms|s|m|h|d|w|y))+$" };
const promSchema = {
  type: "object",
  additionalProperties: false,
  required: ["scrape_configs"],
  properties: {
    global: {
      type: "object",
      additionalProperties: false,
      properties: {
        scrape_interval: duration, scrape_timeout: duration, evaluation_interval: duration,
        external_labels: { type: "object", additionalProperties: { type: "string" } },
      },
    },
    rule_files: { type: "array", items: { type: "string" } },
    scrape_configs: {
      type: "array",
      minItems: 1,
      items: {
        type: "object",
        additionalProperties: false,
        required: ["job_name"],
        properties: {
          job_name: { type: "string", minLength: 1 },
          metrics_path: { type: "string", pattern: "^/" },
          scheme: { enum: ["http", "https"] },
          scrape_interval: duration,
          scrape_timeout: duration,
          static_configs: {
            type: "array",
            items: {
              type: "object",
              additionalProperties: false,
              required: ["targets"],
              properties: {
                targets: { type: "array", items: { type: "string", pattern: "^[A-Za-z0-9.\\-\\[\\]:]+:[0-9]+$" } },
                labels: { type: "object", additionalProperties: { type: "string" } },
              },
            },
          },
        },
      },
    },
  },
};
const [prom] = lib.loadYamlDocuments(c, promFile);
const validProm = new Ajv({ allErrors: true }).compile(promSchema);
c.expect(prom && validProm(prom), "deploy/prometheus.yml", `schema: ${ajvErrors(validProm.errors).join("; ")}`);

// ---- 3. Postern's contract ----------------------------------------------------------
const services = (compose && compose.services) || {};
const relay = services.relay;
const sink = services.sink;
c.expect(relay && sink && services.prometheus, W, "expected services relay, sink and prometheus");

// Short-syntax volumes "src:dst[:mode]" and long syntax, as {source, target}.
function volumes(svc) {
  return ((svc && svc.volumes) || []).map((v) => {
    if (typeof v !== "string") return { source: v.source, target: v.target };
    const [source, target] = v.split(":");
    return { source, target };
  });
}
function isPath(s) {
  return s.startsWith(".") || s.startsWith("/");
}
function addressOn(svc, net) {
  const n = svc && svc.networks && !Array.isArray(svc.networks) ? svc.networks[net] : null;
  return n ? n.ipv4_address : undefined;
}

for (const [name, svc] of Object.entries(services)) {
  if (svc.build) {
    const ctx = path.resolve(composeDir, svc.build.context || ".");
    c.expect(fs.existsSync(path.join(ctx, svc.build.dockerfile || "Dockerfile")), W,
      `${name}: build ${svc.build.context}/${svc.build.dockerfile} not found`);
  }
  for (const v of volumes(svc)) {
    if (isPath(v.source)) {
      c.expect(fs.existsSync(path.resolve(composeDir, v.source)), W, `${name}: mounted file ${v.source} not found`);
    } else {
      c.expect(compose.volumes && v.source in compose.volumes, W, `${name}: volume ${v.source} is not declared`);
    }
  }
}

if (relay && sink) {
  const cfgMount = volumes(relay).find((v) => v.target === "/etc/postern/postern.toml");
  let cfg = null;
  if (c.expect(cfgMount && isPath(cfgMount.source), W, "relay: mount a config file at /etc/postern/postern.toml")) {
    const file = path.resolve(composeDir, cfgMount.source);
    if (fs.existsSync(file)) cfg = lib.checkConfig(c, postern, cfgMount.source, fs.readFileSync(file, "utf8"));
  }
  if (cfg) {
    const facts = lib.relayFacts(c, cfgMount.source, cfg);
    const nets = Object.keys(relay.networks || {});
    const net = nets[0];
    // The next hop is the sink: its fixed address, its --listen port.
    const sinkArgs = [].concat(sink.entrypoint || [], sink.command || []);
    const listen = lib.splitAddress(sinkArgs[sinkArgs.indexOf("--listen") + 1]);
    c.expect(String(sinkArgs[0]).endsWith("postern-load") && sinkArgs.includes("sink"), W, "sink: expected postern-load sink");
    if (facts.nextHop && listen) {
      c.expect(facts.nextHop.host === addressOn(sink, net), W,
        `relay next_hop ${facts.nextHop.host} is not the sink's ipv4_address (${addressOn(sink, net)}) on network ${net}`);
      c.expect(facts.nextHop.port === listen.port, W, `relay next_hop port ${facts.nextHop.port} is not the sink's --listen port ${listen.port}`);
    }
    // Published SMTP port -> a listener; the listener must not be loopback-only.
    for (const p of relay.ports || []) {
      const container = Number(String(typeof p === "object" ? p.target : p).split(":").pop().split("/")[0]);
      const l = facts.listeners.find((x) => x.port === container);
      c.expect(l !== undefined && !lib.isLoopback(l.host), W, `relay publishes container port ${container}, which no non-loopback listener uses`);
    }
    // Prometheus scrapes relay:<admin port>/metrics, so admin listens beyond loopback.
    const targets = ((prom && prom.scrape_configs) || []).flatMap((j) =>
      (j.static_configs || []).flatMap((s) => s.targets.map((t) => ({ job: j, t: lib.splitAddress(t) }))));
    const scrape = targets.find((x) => x.t && x.t.host === "relay");
    if (c.expect(scrape !== undefined, "deploy/prometheus.yml", "no target relay:PORT")) {
      c.expect(facts.admin && scrape.t.port === facts.admin.port, "deploy/prometheus.yml",
        `scrapes relay:${scrape.t.port}, the relay's admin address is ${cfg.admin && cfg.admin.address}`);
      c.expect((scrape.job.metrics_path || "/metrics") === "/metrics", "deploy/prometheus.yml", "metrics_path must be /metrics");
    }
    c.expect(facts.admin && !lib.isLoopback(facts.admin.host), cfgMount.source, "[admin] address is loopback: Prometheus cannot scrape it");
    // The spool: a named volume at spool_dir.
    const spool = volumes(relay).find((v) => v.target === facts.spoolDir);
    c.expect(spool !== undefined && !isPath(spool.source), W, `relay: spool_dir ${facts.spoolDir} must be a named volume`);
    // Connections from the host arrive from the compose network's gateway, whoever made
    // them: that network relaying would be an open relay. Only loopback may relay.
    const subnet = (((compose.networks || {})[net] || {}).ipam || {}).config;
    const sn = subnet && subnet[0] && subnet[0].subnet;
    c.expect(sn && !(cfg.relay.relay_networks || []).includes(sn), cfgMount.source,
      `relay_networks must not include the compose network ${sn}: published connections all come from its gateway`);
    c.expect((cfg.relay.relay_networks || []).every((n) => n.startsWith("127.") || n === "::1/128"),
      cfgMount.source, "relay_networks: loopback only in the shipped compose config");
    c.expect((cfg.relay.accept_domains || []).includes("sink.test"), cfgMount.source,
      "accept_domains must include sink.test, the domain postern-load sends to");
  }
  // SIGTERM drains within 10 s plus the last fdatasync; Docker's default wait is 10 s.
  c.expect(seconds(relay.stop_grace_period) >= 15, W, `relay: stop_grace_period (${relay.stop_grace_period}) must be at least 15s for the drain`);
}

c.finish();
