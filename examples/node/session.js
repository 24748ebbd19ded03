// The Session stream from Node.js: one bidirectional stream, the apple graph opened once, then a forward,
// a backward, a backward that fails (nothing kept: the first one dropped the pass) and a run, each message
// answered in order; the failed step is answered with a status and the stream goes on.
//
//   node examples/node/session.js [HOST:PORT]      (default: $GRADSERVE_TARGET, else 127.0.0.1:50051)
//
// Prints one JSON line per answer: {"step":"SESSION_FORWARD","outputs":{"price":1100}}, ...
"use strict";

const grpc = require("@grpc/grpc-js");
const { toTensor, fromTensor, appleGraph, loadService } = require("./apple");

const FEEDS = { apple: toTensor(200), apple_num: toTensor(5), tax: toTensor(1.1) };
const STEPS = [
  { step: "SESSION_OPEN", graph: { graph: appleGraph() } },
  { step: "SESSION_FORWARD", feeds: FEEDS },
  { step: "SESSION_BACKWARD", wrt: ["apple", "tax"] },
  { step: "SESSION_BACKWARD" },
  { step: "SESSION_RUN", feeds: FEEDS, wrt: ["apple_num"] },
];

function main() {
  const target = process.argv[2] || process.env.GRADSERVE_TARGET || "127.0.0.1:50051";
  const GradServe = loadService();
  const client = new GradServe(target, grpc.credentials.createInsecure());
  const stream = client.Session({ deadline: new Date(Date.now() + 10000) });
  const decode = (map) => Object.fromEntries(Object.entries(map || {}).map(([k, t]) => [k, fromTensor(t)]));
  let answered = 0;
  stream.on("data", (response) => {
    const line = { step: STEPS[answered++].step };
    if (response.status) {
      line.status = { code: grpc.status[response.status.code], message: response.status.message };
    } else {
      if (response.graph_id) line.graph_id = response.graph_id;
      if (Object.keys(response.outputs).length) line.outputs = decode(response.outputs);
      if (Object.keys(response.grads).length) line.grads = decode(response.grads);
    }
    console.log(JSON.stringify(line));
  });
  stream.on("error", (error) => {
    console.error(`Session failed: ${grpc.status[error.code]}: ${error.details}`);
    process.exitCode = 1;
    client.close();
  });
  stream.on("end", () => client.close());
  for (const step of STEPS) stream.write(step);  // sent at once: the answers come back in the same order
  stream.end();
}

if (require.main === module) main();
