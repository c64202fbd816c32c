import { WebWorkerEngineHandler } from "./pkg/index.js";

const handler = new WebWorkerEngineHandler();
self.onmessage = (message) => handler.onmessage(message);
