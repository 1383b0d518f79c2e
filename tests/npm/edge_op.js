#!/usr/bin/env node
// Runs ONE apigee-edge-js operation, unmodified, against an Edge-compatible server and prints
// one JSON line on stdout: {"ok": true, "result": ...} or {"ok": false, "error": ..., "result": ...}.
// Exit status: 0 success, 1 the operation failed, 2 usage, 3 connect failed, 4 crash (uncaught
// exception), 124 timeout.
//
// usage: node edge_op.js <collection.method> '<json options>'   ("connect" only connects)
// env:   EDGE_JS_DIR (the installed apigee-edge-js), EDGE_MGMT (http://127.0.0.1:PORT), EDGE_ORG,
//        EDGE_USER, EDGE_PASS; EDGE_SSO_URL to log in with OAuth at that login server instead of
//        sending Basic credentials; EDGE_TIMEOUT_MS (default 15000).
const apigee = require(process.env.EDGE_JS_DIR).apigee;

function out(code, obj) {
  let text;
  try { text = JSON.stringify(obj); }
  catch (e) { text = JSON.stringify({ ...obj, result: null }); } // a circular Organization
  process.stdout.write(text + "\n");
  process.exit(code);
}
process.on("uncaughtException", (e) => out(4, { ok: false, error: "crash: " + e.message }));
setTimeout(() => out(124, { ok: false, error: "timeout" }),
  parseInt(process.env.EDGE_TIMEOUT_MS || "15000", 10)).unref();

const [op, json] = process.argv.slice(2);
if (!op) out(2, { ok: false, error: "usage: edge_op.js collection.method '{json}'" });
let args;
try { args = json ? JSON.parse(json) : {}; } catch (e) { out(2, { ok: false, error: "bad json: " + e.message }); }

const options = {
  mgmtServer: process.env.EDGE_MGMT,
  org: process.env.EDGE_ORG,
  user: process.env.EDGE_USER,
  password: process.env.EDGE_PASS,
};
if (process.env.EDGE_SSO_URL) options.ssoUrl = process.env.EDGE_SSO_URL;  // OAuth: POST {ssoUrl}/oauth/token
else options.no_token = true;                                             // Basic credentials on every call

apigee.connect(options)
  .catch((e) => out(3, { ok: false, stage: "connect", error: e.message }))
  .then((org) => {
    if (op === "connect") return out(0, { ok: true, result: org.conn.orgProperties || null });
    const [collection, method] = op.split(".");
    if (!org[collection] || typeof org[collection][method] !== "function")
      return out(2, { ok: false, error: "unknown op " + op });
    return org[collection][method](args)
      .then((r) => out(0, { ok: true, result: r === undefined ? null : r }))
      .catch((e) => out(1, { ok: false, error: e.message, result: e.result === undefined ? null : e.result }));
  });
