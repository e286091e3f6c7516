// Starts mboxd on a free port, sends with nodemailer (without and with AUTH) and reads the
// mailbox; then shows a failure rule making nodemailer report a 550.
// Run: (cd examples/node && npm install nodemailer) && MBOXD=/path/to/mboxd node examples/node/send.mjs
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import assert from "node:assert/strict";
import nodemailer from "nodemailer";

const dir = mkdtempSync(join(tmpdir(), "mboxd-node-"));

// Starts mboxd with extra flags; resolves to { proc, port } once it accepts.
function start(...flags) {
  const proc = spawn(process.env.MBOXD ?? "mboxd",
    ["--listen", "127.0.0.1:0", "--mail-dir", join(dir, "mail"), "--shutdown-grace", "1", ...flags],
    { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill(); reject(new Error("mboxd did not start")); }, 10000);
    createInterface({ input: proc.stdout }).once("line", (line) => {
      clearTimeout(timer);
      resolve({ proc, port: Number(line.split(":").pop()) }); // "listening on 127.0.0.1:PORT"
    });
  });
}

// SIGTERM; mboxd exits 0 after a clean shutdown, within 10 s here (a grace of 1 s).
async function stop({ proc }) {
  assert.equal(proc.exitCode ?? proc.signalCode, null, "mboxd exited before it was stopped");
  const exited = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("mboxd did not exit within 10 s")), 10000);
    proc.once("exit", (code) => { clearTimeout(timer); resolve(code); });
  });
  proc.kill("SIGTERM");
  assert.equal(await exited, 0);
}

const message = { from: "app@example.com", subject: "Welcome", text: "Hello, and welcome." };
let server; // the running mboxd, killed in `finally` if a step fails
try {
  // Without AUTH.
  server = await start();
  let transport = nodemailer.createTransport({ host: "127.0.0.1", port: server.port, secure: false, ignoreTLS: true });
  await transport.sendMail({ ...message, to: "alice@localhost" });
  assert.match(readFileSync(join(dir, "mail", "alice"), "utf8"), /^Subject: Welcome$/m);
  await stop(server);

  // With AUTH (for tests only: no TLS), required before MAIL.
  server = await start("--auth-accept-any", "--auth-required");
  transport = nodemailer.createTransport({ host: "127.0.0.1", port: server.port, secure: false, ignoreTLS: true,
    auth: { user: "app", pass: "any password" } });
  await transport.sendMail({ ...message, to: "bob@localhost" });
  assert.match(readFileSync(join(dir, "mail", "bob"), "utf8"), /with ESMTPA/);
  await stop(server);

  // A failure rule: every recipient at localhost is refused with 550.
  server = await start("--fail", "rcpt:*@localhost=550 no such user");
  transport = nodemailer.createTransport({ host: "127.0.0.1", port: server.port, secure: false, ignoreTLS: true });
  await assert.rejects(transport.sendMail({ ...message, to: "carol@localhost" }), (e) => e.responseCode === 550);
  await stop(server);
  console.log("nodemailer: delivered without and with AUTH; the failure rule gave 550");
} finally {
  server?.proc.kill(); // does nothing once stop() has seen it exit
  rmSync(dir, { recursive: true, force: true });
}
