// check_k8s.js ROOT POSTERN_BIN: validates deploy/k8s/*.yaml offline.
//
// 1. Schema: every document against the Kubernetes OpenAPI schema compiled into the npm
//    package kubernetes-models (types, required fields, formats, enums).
// 2. Unknown fields: that schema lets unknown keys through (a misspelt readinessProbe
//    would pass), so every document is also type-checked as an object literal of its
//    kubernetes-types type by the TypeScript compiler, which rejects unknown properties
//    at every depth and wrong scalar types.
// 3. Postern's contract: the ConfigMap's postern.toml passes `postern check-config`, and
//    the StatefulSet, Services and PodDisruptionBudget agree with it and with each other
//    (ports, probes, spool volume, drain timing, non-root, read-only root, resources).
// Exit status 1 with one FAIL line per problem.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const lib = require("./lib");

const [root, postern] = process.argv.slice(2);
if (!root || !postern) {
  console.error("usage: check_k8s.js ROOT POSTERN_BIN");
  process.exit(2);
}
const k8sDir = path.join(root, "deploy", "k8s");
const c = new lib.Checker("check_k8s");
lib.requireModule("kubernetes-models");
const ts = lib.requireModule("typescript");

// apiVersion -> module in kubernetes-types. kubernetes-models uses the apiVersion itself
// as its folder ("v1/Service", "apps/v1/StatefulSet"); kubernetes-types puts the core
// group under "core/v1".
function typesModule(apiVersion) {
  return "kubernetes-types/" + (apiVersion.includes("/") ? apiVersion : "core/" + apiVersion);
}

// ---- load ---------------------------------------------------------------------------
const objects = [];  // {file, index, doc}
const files = fs.readdirSync(k8sDir).filter((f) => /\.ya?ml$/.test(f)).sort();
c.expect(files.length > 0, k8sDir, "no manifests");
for (const f of files) {
  const file = path.join("deploy", "k8s", f);
  lib.loadYamlDocuments(c, path.join(root, file)).forEach((doc, index) => {
    const where = `${file}[${index}]`;
    if (!c.expect(doc && typeof doc === "object" && doc.apiVersion && doc.kind && doc.metadata && doc.metadata.name,
        where, "needs apiVersion, kind and metadata.name")) return;
    objects.push({ file, index, where: `${where} ${doc.kind}/${doc.metadata.name}`, doc });
  });
}

// ---- 1. OpenAPI schema (kubernetes-models) -----------------------------------------
for (const o of objects) {
  const mod = `kubernetes-models/${o.doc.apiVersion}/${o.doc.kind}`;
  let Model;
  try {
    Model = require(mod)[o.doc.kind];
  } catch (e) {
    c.fail(o.where, `no schema for ${o.doc.apiVersion} ${o.doc.kind} (${mod})`);
    continue;
  }
  c.checks++;
  try {
    new Model(o.doc).validate();
  } catch (e) {
    const details = (e.errors || []).map((x) => `${x.instancePath || "/"} ${x.message}`);
    c.fail(o.where, `schema: ${details.length ? details.join("; ") : e.message}`);
  }
}

// ---- 2. Unknown fields and types (kubernetes-types + tsc) --------------------------
{
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "postern-k8s-"));
  const tsFile = path.join(tmp, "manifests.ts");
  const lines = [];
  const owners = [];  // owners[line] = object index
  const imports = new Map();
  objects.forEach((o, i) => {
    const alias = `T${i}`;
    imports.set(alias, `import type { ${o.doc.kind} as ${alias} } from ${JSON.stringify(typesModule(o.doc.apiVersion))};`);
  });
  for (const line of imports.values()) lines.push(line);
  objects.forEach((o, i) => {
    const body = `export const doc${i}: T${i} = ${JSON.stringify(o.doc, null, 2)};`.split("\n");
    for (const l of body) {
      owners[lines.length] = i;
      lines.push(l);
    }
  });
  fs.writeFileSync(tsFile, lines.join("\n") + "\n");
  const program = ts.createProgram([tsFile], {
    noEmit: true,
    strict: true,
    skipLibCheck: true,
    types: [],
    typeRoots: [],
    baseUrl: __dirname,
    paths: { "kubernetes-types/*": [path.join(__dirname, "node_modules", "kubernetes-types", "*")] },
  });
  const diags = ts.getPreEmitDiagnostics(program);
  c.checks++;
  for (const d of diags) {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, " ");
    if (d.file && d.start !== undefined) {
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      const o = objects[owners[line]];
      c.fail(o ? o.where : tsFile, `types: ${msg} (at: ${lines[line].trim()})`);
    } else {
      c.fail(tsFile, `types: ${msg}`);
    }
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}

// ---- 3. Postern's contract ----------------------------------------------------------
function byKind(kind) {
  return objects.filter((o) => o.doc.kind === kind);
}
function selects(selector, labels) {
  return Object.entries(selector || {}).every(([k, v]) => labels && labels[k] === v);
}

const [sts] = byKind("StatefulSet");
const configMaps = byKind("ConfigMap");
const services = byKind("Service");
const pdbs = byKind("PodDisruptionBudget");
c.expect(byKind("StatefulSet").length === 1, k8sDir, "expected exactly one StatefulSet");
c.expect(configMaps.length >= 1, k8sDir, "expected a ConfigMap with the relay's config");
c.expect(pdbs.length === 1, k8sDir, "expected one PodDisruptionBudget");

// The Dockerfile's USER, so that runAsUser and fsGroup give the same uid the image has.
const dockerUser = (/^USER\s+(\d+)(?::(\d+))?\s*$/m.exec(
  fs.readFileSync(path.join(root, "deploy", "Dockerfile"), "utf8")) || [])[1];

if (sts) {
  const w = sts.where;
  const spec = sts.doc.spec || {};
  const pod = (spec.template && spec.template.spec) || {};
  const labels = (spec.template && spec.template.metadata && spec.template.metadata.labels) || {};
  const containers = pod.containers || [];
  const ctr = containers.find((x) => x.name === "postern") || containers[0] || {};
  const ports = Object.fromEntries((ctr.ports || []).map((p) => [p.name, p.containerPort]));
  const mounts = ctr.volumeMounts || [];
  const args = [...(ctr.command || []), ...(ctr.args || [])];
  const cfgIdx = args.indexOf("--config");
  const cfgPath = cfgIdx >= 0 ? args[cfgIdx + 1] : "/etc/postern/postern.toml";

  // The config file the container reads: a ConfigMap key mounted at --config's path.
  let cfgText = null;
  const cfgMount = mounts.find((m) => cfgPath.startsWith(m.mountPath.replace(/\/$/, "") + "/"));
  if (c.expect(cfgMount !== undefined, w, `nothing mounted at the --config path ${cfgPath}`)) {
    const vol = (pod.volumes || []).find((v) => v.name === cfgMount.name);
    const cmName = vol && vol.configMap && vol.configMap.name;
    const cm = configMaps.find((o) => o.doc.metadata.name === cmName);
    const key = path.posix.relative(cfgMount.mountPath, cfgPath);
    if (c.expect(cm !== undefined, w, `volume ${cfgMount.name} must be the ConfigMap with the config (found ${cmName})`)) {
      cfgText = (cm.doc.data || {})[key];
      c.expect(typeof cfgText === "string", cm.where, `no data key ${key} (mounted as ${cfgPath})`);
      c.expect(cfgMount.readOnly === true, w, "the config mount should be readOnly");
    }
  }
  const cfg = cfgText ? lib.checkConfig(c, postern, `ConfigMap ${cfgPath}`, cfgText) : null;
  if (cfg) {
    const facts = lib.relayFacts(c, `ConfigMap ${cfgPath}`, cfg);
    // Ports: the listener's port is the container's smtp port; the admin port is the
    // one the probes use, on an address the kubelet can reach (the pod IP).
    const smtpPorts = facts.listeners.map((l) => l.port);
    c.expect(smtpPorts.includes(ports.smtp), w, `containerPort smtp (${JSON.stringify(ports.smtp)}) is not a listener port of the config (${JSON.stringify(smtpPorts)})`);
    c.expect(facts.admin && ports.admin === facts.admin.port, w, `containerPort admin (${ports.admin}) differs from [admin] address`);
    c.expect(facts.admin && !lib.isLoopback(facts.admin.host), w, "[admin] address is loopback: probes and scrapes come from outside the pod");
    // The spool is the volume claim template, mounted at the config's spool_dir.
    const claims = (spec.volumeClaimTemplates || []).map((t) => t.metadata.name);
    const spoolMount = mounts.find((m) => m.mountPath.replace(/\/$/, "") === facts.spoolDir.replace(/\/$/, ""));
    c.expect(spoolMount !== undefined && claims.includes(spoolMount.name), w,
      `spool_dir ${facts.spoolDir} must be a volumeClaimTemplates volume (one PVC per pod)`);
    // Binding a port below 1024 as non-root needs the pod's unprivileged-port sysctl.
    const low = smtpPorts.filter((p) => p < 1024);
    if (low.length) {
      const sysctl = ((pod.securityContext || {}).sysctls || []).find((s) => s.name === "net.ipv4.ip_unprivileged_port_start");
      c.expect(sysctl !== undefined && Number(sysctl.value) <= Math.min(...low), w,
        `listener port ${Math.min(...low)} needs sysctl net.ipv4.ip_unprivileged_port_start <= it (non-root, no capabilities)`);
    }
  }

  // Probes on the admin endpoint of DESIGN.md.
  const probe = (p) => (p && p.httpGet) || {};
  c.expect(probe(ctr.readinessProbe).path === "/readyz" && probe(ctr.readinessProbe).port === "admin", w,
    "readinessProbe must GET /readyz on port admin");
  c.expect(probe(ctr.livenessProbe).path === "/healthz" && probe(ctr.livenessProbe).port === "admin", w,
    "livenessProbe must GET /healthz on port admin");

  // Pods spread over nodes, by a selector that matches the pods' own labels.
  const podLabels = (spec.template.metadata || {}).labels || {};
  const spread = (pod.topologySpreadConstraints || []).find((t) => t.topologyKey === "kubernetes.io/hostname");
  c.expect(spread !== undefined && Object.entries((spread.labelSelector || {}).matchLabels || {})
    .every(([k, v]) => podLabels[k] === v) && Object.keys(spread.labelSelector.matchLabels).length > 0, w,
    "topologySpreadConstraints must spread the pods over kubernetes.io/hostname by their own labels");
  c.expect(probe(ctr.startupProbe).path === "/healthz" || probe(ctr.startupProbe).path === "/readyz", w,
    "startupProbe must GET /healthz or /readyz");

  // Shutdown: preStop, then SIGTERM and the relay's drain (server.drain_timeout, 10 s by
  // default and in the ConfigMap, plus the last fdatasync) must fit in the grace period.
  const preStop = (ctr.lifecycle || {}).preStop;
  let preStopSeconds = 0;
  if (c.expect(preStop !== undefined, w, "no preStop hook")) {
    const cmd = ((preStop.exec || {}).command || []).join(" ");
    const m = /(?:^|\/|\s)sleep\s+(\d+)/.exec(cmd);
    preStopSeconds = m ? Number(m[1]) : preStop.sleep ? preStop.sleep.seconds : 0;
  }
  const grace = pod.terminationGracePeriodSeconds;
  c.expect(typeof grace === "number" && grace >= preStopSeconds + 10 + 5, w,
    `terminationGracePeriodSeconds (${grace}) must cover preStop (${preStopSeconds} s) + drain (10 s) + 5 s`);

  // Non-root, read-only root, nothing to escalate to.
  const psc = pod.securityContext || {};
  const csc = ctr.securityContext || {};
  const uid = csc.runAsUser ?? psc.runAsUser;
  c.expect((csc.runAsNonRoot ?? psc.runAsNonRoot) === true, w, "runAsNonRoot must be true");
  c.expect(typeof uid === "number" && uid !== 0, w, "runAsUser must be a non-zero uid");
  c.expect(dockerUser === undefined || String(uid) === dockerUser, w, `runAsUser ${uid} differs from the Dockerfile's USER ${dockerUser}`);
  c.expect(psc.fsGroup === uid || psc.fsGroup === (csc.runAsGroup ?? psc.runAsGroup), w, "fsGroup must give the relay's group the spool volume");
  c.expect(csc.readOnlyRootFilesystem === true, w, "readOnlyRootFilesystem must be true");
  c.expect(csc.allowPrivilegeEscalation === false, w, "allowPrivilegeEscalation must be false");
  c.expect(((csc.capabilities || {}).drop || []).includes("ALL"), w, "capabilities must drop ALL");
  const req = (ctr.resources || {}).requests || {};
  c.expect(req.cpu !== undefined && req.memory !== undefined, w, "resources.requests needs cpu and memory");
  c.expect(((ctr.resources || {}).limits || {}).memory !== undefined, w, "resources.limits needs memory");

  // Services select these pods and name ports the container has.
  const governing = services.find((s) => s.doc.metadata.name === spec.serviceName);
  c.expect(governing !== undefined && governing.doc.spec.clusterIP === "None", w,
    `serviceName ${spec.serviceName} must be a headless Service in deploy/k8s`);
  c.expect(selects((spec.selector || {}).matchLabels, labels), w, "selector does not match the template's labels");
  for (const s of services) {
    c.expect(selects(s.doc.spec.selector, labels) && Object.keys(s.doc.spec.selector || {}).length > 0, s.where,
      "selector does not select the StatefulSet's pods");
    for (const p of s.doc.spec.ports || []) {
      const target = p.targetPort ?? p.port;
      c.expect(typeof target === "number" ? Object.values(ports).includes(target) : target in ports, s.where,
        `port ${p.name || p.port}: targetPort ${target} is not a container port`);
    }
  }
  c.expect(services.some((s) => s.doc.spec.clusterIP !== "None" && (s.doc.spec.ports || []).some((p) => p.port === 25)),
    k8sDir, "no Service publishes port 25");
  for (const p of pdbs) {
    c.expect(selects((p.doc.spec.selector || {}).matchLabels, labels), p.where, "selector does not select the StatefulSet's pods");
    const mu = p.doc.spec.maxUnavailable;
    c.expect(mu === 1 || (p.doc.spec.minAvailable !== undefined && p.doc.spec.minAvailable < (spec.replicas ?? 1)), p.where,
      "must allow exactly one pod down at a time (maxUnavailable: 1)");
  }
}

c.finish();
