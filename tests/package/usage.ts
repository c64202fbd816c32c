// Type-checks the package's public API as a web app would use it (tsc --noEmit).
import {
  CreateEngine,
  CreateWebWorkerEngine,
  WebWorkerEngineHandler,
  hasModelInCache,
  deleteModelInCache,
  WebGPUUnavailableError,
  ModelTooLargeError,
  DeviceLostError,
  ModelLoadError,
  type ChatCompletion,
  type ChatCompletionChunk,
  type InitProgressReport,
} from "glim-llm";

export async function demo(modelUrl: string): Promise<string> {
  const show = (r: InitProgressReport) => console.log(r.progress, r.timeElapsed, r.text, r.loadedBytes, r.totalBytes);
  const engine = await CreateEngine(modelUrl, { initProgressCallback: show, contextWindowSize: 1024 });
  const reply: ChatCompletion = await engine.chat.completions.create({
    messages: [{ role: "user", content: "Hello" }],
    temperature: 0,
    max_tokens: 64,
  });
  const content: string = reply.choices[0].message.content ?? "";
  const reason: "stop" | "length" | "abort" | "tool_calls" = reply.choices[0].finish_reason;
  const weather = { type: "function" as const, function: { name: "get_weather", parameters: { type: "object" } } };
  const called = await engine.chat.completions.create({
    messages: [{ role: "user", content: "Weather in Paris?" }],
    tools: [weather],
    tool_choice: { type: "function", function: { name: "get_weather" } },
    response_format: undefined,
  });
  const calls = called.choices[0].message.tool_calls ?? [];
  const args: string = calls.length ? calls[0].function.arguments : "{}";
  const structured = await engine.chat.completions.create({
    messages: [{ role: "user", content: "A city as JSON" }, { role: "assistant", content: null, tool_calls: calls },
      { role: "tool", tool_call_id: calls[0]?.id ?? "", content: args }],
    tools: [weather],
    tool_choice: "none",
    response_format: { type: "json_schema", json_schema: { name: "city", schema: { type: "object" } } },
  });
  console.log(structured.choices[0].message.content);
  const speed: number = reply.usage.extra.decode_tokens_per_s;
  let streamed = "";
  const chunks: AsyncIterable<ChatCompletionChunk> = await engine.chat.completions.create({
    messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }],
    stream: true,
    stream_options: { include_usage: true },
    top_p: 0.9, top_k: 40, min_p: 0.05, repetition_penalty: 1.1,
    frequency_penalty: 0.1, presence_penalty: 0.1, seed: 1, stop: ["\n\n"],
  });
  for await (const chunk of chunks) {
    streamed += chunk.choices[0]?.delta?.content ?? "";
    if (chunk.usage) console.log(chunk.usage.total_tokens);
  }
  const text = await engine.completions.create({ prompt: "Once upon a time", max_tokens: 8 });
  engine.interruptGenerate();
  await engine.resetChat();
  console.log(await engine.runtimeStatsText(), (await engine.info()).adapter);
  await engine.unload();

  const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  const inWorker = await CreateWebWorkerEngine(worker, modelUrl, { initProgressCallback: show });
  await inWorker.unload();
  const handler = new WebWorkerEngineHandler();
  void handler;
  if (await hasModelInCache(modelUrl)) await deleteModelInCache(modelUrl);
  try {
    await CreateEngine(modelUrl);
  } catch (e) {
    if (e instanceof WebGPUUnavailableError || e instanceof ModelTooLargeError) return e.message;
    if (e instanceof DeviceLostError || e instanceof ModelLoadError) return e.name;
  }
  return content + reason + speed + streamed + text.choices[0].text;
}
