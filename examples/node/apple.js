// The seed's apple example from Node.js, with nothing but proto/gradserve.proto:
// price = apple * count * tax, forward value and gradients in one Run call.
//
//   npm ci --prefix examples/node
//   node examples/node/apple.js [HOST:PORT]      (default: $GRADSERVE_TARGET, else 127.0.0.1:50051)
//
// Prints JSON: {"graph_id": ..., "outputs": {"price": 1100.0000000000002}, "grads": {"apple": 5.5, ...}}.
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO = path.join(__dirname, "..", "..", "proto", "gradserve.proto");
// gradserve.proto imports google/rpc/status.proto (the Session stream's per-step status): a copy of
// googleapis' file is here, as grpc-js projects vendor it.
const INCLUDE = path.join(__dirname, "protos");

// Tensors are raw little-endian bytes in C order; these are the element types this example reads and writes.
const DTYPES = {
  FLOAT32: { size: 4, read: (b, o) => b.readFloatLE(o), write: (b, v, o) => b.writeFloatLE(v, o) },
  FLOAT64: { size: 8, read: (b, o) => b.readDoubleLE(o), write: (b, v, o) => b.writeDoubleLE(v, o) },
  INT32: { size: 4, read: (b, o) => b.readInt32LE(o), write: (b, v, o) => b.writeInt32LE(v, o) },
  INT64: { size: 8, read: (b, o) => Number(b.readBigInt64LE(o)), write: (b, v, o) => b.writeBigInt64LE(BigInt(v), o) },
};

function loadService() {
  // keepCase keeps the .proto's field names; longs as Numbers suit tensor shapes.
  const options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };
  const definition = protoLoader.loadSync(PROTO, { ...options, includeDirs: [INCLUDE] });
  return grpc.loadPackageDefinition(definition).gradserve.v1.GradServe;
}

/** A Tensor message from a flat array of numbers, its shape ([] for a scalar) and a dtype name. */
function toTensor(values, shape = [], dtype = "FLOAT64") {
  const flat = [].concat(values);
  const kind = DTYPES[dtype];
  const data = Buffer.alloc(flat.length * kind.size);
  flat.forEach((v, i) => kind.write(data, v, i * kind.size));
  return { dtype, shape, data };
}

/** A Tensor message as a number (scalar) or nested arrays following its shape. */
function fromTensor(tensor) {
  const kind = DTYPES[tensor.dtype];
  if (!kind) throw new Error(`this example reads ${Object.keys(DTYPES).join(", ")}, not ${tensor.dtype}`);
  const shape = tensor.shape.map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  if (tensor.data.length !== count * kind.size) {
    throw new Error(`tensor of shape [${shape}] ${tensor.dtype} has ${tensor.data.length} bytes`);
  }
  const flat = Array.from({ length: count }, (_, i) => kind.read(tensor.data, i * kind.size));
  const nest = (offset, dims) => {
    if (dims.length === 0) return flat[offset];
    const stride = dims.slice(1).reduce((a, b) => a * b, 1);
    return Array.from({ length: dims[0] }, (_, i) => nest(offset + i * stride, dims.slice(1)));
  };
  return nest(0, shape);
}

/** The seed's apple graph: apple_price = apple * apple_num; price = apple_price * tax. */
function appleGraph() {
  const input = (name) => ({ name, dtype: "FLOAT64" });
  return {
    inputs: [input("apple"), input("apple_num"), input("tax")],
    nodes: [
      { name: "apple_price", op: "Mul", inputs: ["apple", "apple_num"] },
      { name: "price", op: "Mul", inputs: ["apple_price", "tax"] },
    ],
    outputs: [{ name: "price", value: "price" }],
  };
}

function main() {
  const target = process.argv[2] || process.env.GRADSERVE_TARGET || "127.0.0.1:50051";
  const GradServe = loadService();
  const client = new GradServe(target, grpc.credentials.createInsecure());
  const request = {
    graph: { graph: appleGraph() },
    feeds: { apple: toTensor(200), apple_num: toTensor(5), tax: toTensor(1.1) },
    // No output_grads: the scalar output price is seeded with 1 (the chapter's dprice = 1).
    // No wrt: gradients for every floating-point input.
  };
  const deadline = new Date(Date.now() + 10000);
  client.Run(request, { deadline }, (error, response) => {
    client.close();
    if (error) {
      console.error(`Run failed: ${grpc.status[error.code]}: ${error.details}`);
      process.exitCode = 1;
      return;
    }
    const decode = (map) => Object.fromEntries(Object.entries(map).map(([k, t]) => [k, fromTensor(t)]));
    const result = { graph_id: response.graph_id, outputs: decode(response.outputs), grads: decode(response.grads) };
    console.log(JSON.stringify(result));
  });
}

if (require.main === module) main();

module.exports = { toTensor, fromTensor, appleGraph, loadService };
