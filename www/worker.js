// The module worker that runs the engine (WebGPU, weights, tokenizer) off the page's thread.
import { WebWorkerEngineHandler } from "./pkg/index.js";

const handler = new WebWorkerEngineHandler();
self.onmessage = (message) => handler.onmessage(message);
