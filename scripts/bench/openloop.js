// Open-loop load: requests start on a fixed schedule whatever the server does, and each
// latency is measured from its scheduled start, so a stall is charged to every request
// it delays (no coordinated omission). Usage:
//   node openloop.js <base-url> <users-file> <GET /feeds|POST /posts> <rate/s> <seconds> <connections>
const http = require("http");
const fs = require("fs");

const [base, usersFile, kind, rate, seconds, connections] = process.argv.slice(2);
const url = new URL(base);
const users = fs.readFileSync(usersFile, "utf8").trim().split("\n").map((l) => l.split(" "));
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(connections) });
const total = Math.round(Number(rate) * Number(seconds));
const latencies = [];
const statuses = {};
let done = 0;
const start = performance.now();

function fire(i) {
  const scheduled = start + (i * 1000) / Number(rate);
  const [id, token] = users[Math.floor(Math.random() * users.length)];
  const post = kind.startsWith("POST");
  const body = post ? '{"content":"open-loop post"}' : null;
  const req = http.request(
    {
      host: url.hostname,
      port: url.port,
      agent,
      method: post ? "POST" : "GET",
      path: post ? "/posts" : `/feeds/${id}`,
      headers: {
        Authorization: `Token ${token}`,
        ...(post ? { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) } : {}),
      },
    },
    (res) => {
      res.resume();
      res.on("end", () => finish(res.statusCode, scheduled));
    },
  );
  req.on("error", () => finish("error", scheduled));
  if (body) req.write(body);
  req.end();
}

function finish(status, scheduled) {
  latencies.push(performance.now() - scheduled);
  statuses[status] = (statuses[status] || 0) + 1;
  if (++done === total) report();
}

function report() {
  latencies.sort((a, b) => a - b);
  const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
  const elapsed = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage();
  console.log(JSON.stringify({ sent: total, elapsed, rps: total / elapsed, load_cpu: (cpu.user + cpu.system) / 1e6 / elapsed, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: latencies[latencies.length - 1], statuses }));
  process.exit(0);
}

let next = 0;
function tick() {
  const due = Math.min(total, Math.floor(((performance.now() - start) * Number(rate)) / 1000) + 1);
  while (next < due) fire(next++);
  if (next < total) setTimeout(tick, 1);
}
tick();
