// Helpers shared by the deploy/ checkers (check_k8s.js, check_compose.js): a failure
// collector, YAML loading, and reading a Postern TOML config the way the relay does.
//
// A checker records every problem with fail() and exits 1 at the end if there was any,
// so one run reports them all. Missing npm modules are reported with the command that
// installs them (deploy/install-deps.sh), not a stack trace.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { execFileSync, spawnSync } = require("child_process");

function requireModule(name) {
  try {
    return require(name);
  } catch (e) {
    if (e.code !== "MODULE_NOT_FOUND") throw e;
    console.error(
      `missing npm module ${name}: run deploy/install-deps.sh ` +
        `(npm ci in tests/deploy)`
    );
    process.exit(1);
  }
}

const YAML = requireModule("yaml");

class Checker {
  constructor(name) {
    this.name = name;
    this.problems = [];
    this.checks = 0;
  }

  fail(where, message) {
    this.problems.push(`${where}: ${message}`);
  }

  // Records one named check; false when it failed.
  expect(ok, where, message) {
    this.checks++;
    if (!ok) this.fail(where, message);
    return ok;
  }

  finish() {
    for (const p of this.problems) console.error(`FAIL ${p}`);
    if (this.problems.length > 0) {
      console.error(`${this.name}: ${this.problems.length} problem(s)`);
      process.exit(1);
    }
    console.log(`${this.name}: ok (${this.checks} checks)`);
  }
}

// Every document of a YAML file, as plain objects. YAML merge keys (<<) are resolved, as
// Docker Compose does. Parse errors and warnings are failures.
function loadYamlDocuments(checker, file) {
  const text = fs.readFileSync(file, "utf8");
  const docs = YAML.parseAllDocuments(text, { merge: true, prettyErrors: true });
  const out = [];
  for (const doc of docs) {
    for (const e of [...doc.errors, ...doc.warnings]) checker.fail(file, e.message);
    const value = doc.toJS({ maxAliasCount: 100 });
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

// `postern check-config` on a config given as text; returns the parsed TOML (through
// Debian's python3 tomllib) when the relay accepts it, else null.
function checkConfig(checker, postern, where, text) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "postern-deploy-"));
  const file = path.join(dir, "postern.toml");
  try {
    fs.writeFileSync(file, text);
    const r = spawnSync(postern, ["check-config", file], { encoding: "utf8" });
    const why = (r.stderr || r.error || "").toString().trim().split(file).join(where);
    if (!checker.expect(r.status === 0, where, `postern check-config refused it: ${why}`)) {
      return null;
    }
    const json = execFileSync(
      "/usr/bin/python3",
      ["-c", "import json,sys,tomllib; print(json.dumps(tomllib.load(open(sys.argv[1],'rb'))))", file],
      { encoding: "utf8" }
    );
    return JSON.parse(json);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// "ip:port" or "[ipv6]:port" -> {host, port}; null for anything else.
function splitAddress(text) {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(text || "");
  if (!m) return null;
  return { host: m[1] || m[2], port: Number(m[3]) };
}

function isNumericIp(host) {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || (host.includes(":") && /^[0-9A-Fa-f:.]+$/.test(host));
}

function isLoopback(host) {
  return host.startsWith("127.") || host === "::1" || host === "localhost";
}

// What the relay needs from a config's listeners, admin address and route: the checkers
// compare these with the ports, probes and addresses around it. The relay also takes a
// host name or "mx" as next_hop, but the bundled deploy files pin a numeric ip:port so
// that it can be compared with the sink's or Service's address here.
function relayFacts(checker, where, cfg) {
  const facts = { listeners: [], admin: null, nextHop: null, spoolDir: null };
  facts.spoolDir = (cfg.server && cfg.server.spool_dir) || "/var/spool/postern";
  for (const l of cfg.listener || []) facts.listeners.push({ ...splitAddress(l.address), raw: l });
  facts.admin = splitAddress((cfg.admin && cfg.admin.address) || "127.0.0.1:9025");
  const star = (cfg.route || []).find((r) => r.domain === "*");
  if (checker.expect(star !== undefined, where, 'no [[route]] with domain = "*"')) {
    const hop = splitAddress(star.next_hop);
    if (checker.expect(hop !== null && isNumericIp(hop.host), where,
        `next_hop "${star.next_hop}" must be a numeric ip:port in the bundled deploy files (so it can be checked)`)) {
      facts.nextHop = hop;
    }
  }
  return facts;
}

module.exports = {
  Checker,
  YAML,
  checkConfig,
  isLoopback,
  isNumericIp,
  loadYamlDocuments,
  relayFacts,
  requireModule,
  splitAddress,
};
