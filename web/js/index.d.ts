// Types of glim-llm's public API (WebLLM-shaped, OpenAI's request and response objects).

export interface InitProgressReport {
  /** 0..1 */
  progress: number;
  /** Seconds since loading started. */
  timeElapsed: number;
  text: string;
  loadedBytes: number;
  totalBytes: number;
}

export interface EngineOptions {
  initProgressCallback?: (report: InitProgressReport) => void;
  /** KV cache length in tokens (default 2048, at most the model's). */
  contextWindowSize?: number;
  /** Shards, or GGUF chunks of 4 MiB, downloaded at once (default 4). */
  parallelFetches?: number;
  /** The name responses carry and requests may ask for (default: the folder's or file's name). */
  modelId?: string;
  /** The kernels built for GPUs or for CPU adapters' SIMD lanes (default: "cpu" on a software adapter, else "gpu"). */
  kernels?: "gpu" | "cpu";
  /** `false` keeps the device from WebGPU's subgroup operations (default: used where the adapter has them). */
  subgroups?: boolean;
  /** Launches the matrix-vector kernel as "TEAM,TEAMS,OUT1,OUT4,OUT8" says (as GLIM_GEMV natively), for sweeps. */
  gemv?: string;
}

export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool";
  /** May be null on an assistant turn that only calls tools. */
  content: string | Array<{ type: "text"; text: string }> | null;
  name?: string;
  /** An assistant turn's calls. */
  tool_calls?: ToolCall[];
  /** A tool turn: the call it answers. */
  tool_call_id?: string;
}

export interface ToolCall {
  id: string;
  type: "function";
  /** `arguments`: the arguments as JSON text. */
  function: { name: string; arguments: string };
}

export interface Tool {
  type: "function";
  function: { name: string; description?: string; parameters?: object };
}

export type ToolChoice = "auto" | "none" | "required" | { type: "function"; function: { name: string } };

export interface SamplingFields {
  model?: string;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  min_p?: number;
  repetition_penalty?: number;
  frequency_penalty?: number;
  presence_penalty?: number;
  max_tokens?: number;
  seed?: number;
  stop?: string | string[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  n?: 1;
  ignore_eos?: boolean;
  /** Hold the answer to JSON: any object, or JSON valid against a JSON Schema (OpenAI's shapes). */
  response_format?: ResponseFormat;
}

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; json_schema: { name: string; schema?: object; strict?: boolean; description?: string } };

export interface ChatCompletionRequest extends SamplingFields {
  messages: ChatMessage[];
  max_completion_tokens?: number;
  /** Functions the model may call; calls come back as `message.tool_calls`. */
  tools?: Tool[];
  tool_choice?: ToolChoice;
  parallel_tool_calls?: boolean;
}

export interface CompletionRequest extends SamplingFields {
  prompt: string;
}

export type FinishReason = "stop" | "length" | "abort" | "tool_calls";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  extra: {
    prefill_tokens_per_s: number;
    decode_tokens_per_s: number;
    time_to_first_token_s: number;
    e2e_latency_s: number;
    reused_prompt_tokens: number;
  };
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: Array<{
    index: number;
    message: { role: "assistant"; content: string | null; tool_calls?: ToolCall[] };
    finish_reason: FinishReason;
    logprobs: null;
  }>;
  usage: Usage;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: Array<{
    index: number;
    delta: {
      role?: "assistant";
      content?: string;
      /** A call's index, id and name first, then its arguments. */
      tool_calls?: Array<{ index: number; id?: string; type?: "function"; function: { name?: string; arguments: string } }>;
    };
    finish_reason: FinishReason | null;
    logprobs: null;
  }>;
  /** Only on the last chunk, when stream_options.include_usage is set. */
  usage?: Usage;
}

export interface Completion {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  choices: Array<{ index: number; text: string; finish_reason: FinishReason | null; logprobs: null }>;
  usage?: Usage;
}

export interface EngineInfo {
  model: string;
  format: string;
  precision: "f16" | "f32";
  context: number;
  weightBytes: number;
  adapter: string;
  backend: string;
  shaderF16: boolean;
  maxStorageBufferBindingSize: number;
  /** The adapter as the browser describes it (null where it would not say). */
  adapterInfo: AdapterInfo | null;
  /** The kernel set running: built for GPUs, or for CPU adapters. */
  kernels: "gpu" | "cpu";
  /** The device's one subgroup size where subgroup operations run on it, else null. */
  subgroupSize: number | null;
  /** How the matrix-vector kernel runs: threads per row, rows at once, and how a team adds up its sums. */
  gemv: { team: number; teams: number; reduction: "subgroup" | "workgroup" };
  /** The adapter runs on the CPU; `note` then says what speed to expect. */
  software: boolean;
  note: string | null;
}

export interface ChatCompletions {
  create(request: ChatCompletionRequest & { stream: true }): Promise<AsyncIterable<ChatCompletionChunk>>;
  create(request: ChatCompletionRequest & { stream?: false }): Promise<ChatCompletion>;
  create(request: ChatCompletionRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
}

export interface Completions {
  create(request: CompletionRequest & { stream: true }): Promise<AsyncIterable<Completion>>;
  create(request: CompletionRequest & { stream?: false }): Promise<Completion>;
  create(request: CompletionRequest): Promise<Completion | AsyncIterable<Completion>>;
}

export interface GlimEngine {
  chat: { completions: ChatCompletions };
  completions: Completions;
  interruptGenerate(): void;
  resetChat(): Promise<void>;
  runtimeStatsText(): Promise<string>;
  info(): Promise<EngineInfo>;
  unload(): Promise<void>;
}

/**
 * `modelUrl`: a GGUF file (its path ends in `.gguf`, or its first four bytes are `GGUF`),
 * read with Range requests and run as stored, or a model folder in MLC-LLM's layout.
 */
export function CreateEngine(modelUrl: string, options?: EngineOptions): Promise<GlimEngine>;
export function CreateWebWorkerEngine(worker: Worker, modelUrl: string, options?: EngineOptions): Promise<GlimEngine>;

export class WebWorkerEngineHandler {
  constructor(post?: (message: unknown) => void);
  onmessage(event: MessageEvent): Promise<void>;
}

export interface AdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** The adapter runs on the CPU (SwiftShader, WARP, lavapipe). */
  software: boolean;
  /** For a software adapter, what speed to expect; else null. */
  note: string | null;
}

/** The WebGPU adapter this context gets, before anything is loaded. */
export function adapterInfo(): Promise<AdapterInfo>;

export function hasModelInCache(modelUrl: string): Promise<boolean>;
export function deleteModelInCache(modelUrl: string): Promise<void>;

export class WebGPUUnavailableError extends Error {}
export class ModelTooLargeError extends Error {}
export class DeviceLostError extends Error {}
export class ModelLoadError extends Error {}
export class InvalidRequestError extends Error {}
