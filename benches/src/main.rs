//! `kernel-bench`: time per call and achieved weight bandwidth of the GEMV (decode) kernels
//! for each weight format at Llama-7B shapes, next to the bandwidth a plain buffer-copy
//! kernel reaches on the same device through the same dispatch path.
//!
//! Each case records a batch of B identical launches into one recorder, submits it and
//! waits; the wall-clock time of that submit-and-wait divided by B is the time per call.
//! After a warm-up, R batches are timed and the median and minimum reported. B and R are
//! chosen so that every case takes about `--seconds` (1.5 s by default). Nothing here
//! asserts on timings: the numbers are for people to read.

use std::process::ExitCode;
use std::time::Instant;

use glim::gpu::{assemble, grid, Binding, Dispatch, GpuContext, KernelSource, Precision};
use glim::kernels::matmul::{self, Fusion, Shape};
use glim::kernels::weight::GpuWeight;
use glim::quant::{PackedWeight, WeightFormat};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// GEMV shapes, `N x K`: rows (output features) by input dimension.
const SHAPES: [(usize, usize); 3] = [(4096, 4096), (4096, 11008), (11008, 4096)];
/// The formats timed (every one the kernels run); F16 is the unquantized reference.
const FORMATS: [WeightFormat; 17] = WeightFormat::ALL;
/// The copy baseline moves as many bytes as this format's weights at this shape.
const COPY_LIKE: (WeightFormat, usize, usize) = (WeightFormat::Q4F16, 4096, 11008);

const COPY_WGSL: &str = include_str!("copy.wgsl");
/// Threads per workgroup of `copy.wgsl`; each copies one 16-byte vec4.
const COPY_THREADS: usize = 256;
const COPY_BINDINGS: &[Binding] = &[Binding::Read, Binding::ReadWrite];

/// Most launches recorded into one batch.
const MAX_BATCH: usize = 2000;
/// Wall-clock time the calibration batch aims for.
const PROBE_SECONDS: f64 = 0.02;

const USAGE: &str = "\
usage: kernel-bench [options]

Times the GEMV kernels of every weight format (MLC's, the floats, GGUF's blocks) at
4096x4096, 4096x11008 and 11008x4096 (N x K)
against a plain buffer-copy kernel on the adapter GLIM_BACKEND / GLIM_ADAPTER select.

options:
  --precision f16|f32  activation precision (default: the adapter's, see GLIM_PRECISION)
  --reps R             timed batches per case (default 15; fewer when one call is slow)
  --batch B            launches per batch (default: chosen from a calibration run)
  --seconds S          timing budget per case (default 1.5)
  --quick              smoke run: 3 batches and 0.1 s per case
  -h, --help           this text";

struct Options {
    precision: Option<Precision>,
    /// `Some` when given on the command line: then it is used as is.
    reps: Option<usize>,
    batch: Option<usize>,
    seconds: f64,
    quick: bool,
}

impl Options {
    fn default_reps(&self) -> usize {
        if self.quick {
            3
        } else {
            15
        }
    }

    fn min_reps(&self) -> usize {
        if self.quick {
            2
        } else {
            5
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut opts = Options {
        precision: None,
        reps: None,
        batch: None,
        seconds: 1.5,
        quick: false,
    };
    let mut seconds = None;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => opts.quick = true,
            "--precision" => {
                opts.precision = Some(match value("--precision")?.to_ascii_lowercase().as_str() {
                    "f16" => Precision::F16,
                    "f32" => Precision::F32,
                    other => return Err(format!("--precision {other}: expected f16 or f32")),
                })
            }
            "--reps" => opts.reps = Some(parse_count("--reps", &value("--reps")?)?),
            "--batch" => opts.batch = Some(parse_count("--batch", &value("--batch")?)?),
            "--seconds" => {
                let v = value("--seconds")?;
                match v.parse::<f64>() {
                    Ok(s) if s > 0.0 && s.is_finite() => seconds = Some(s),
                    _ => return Err(format!("--seconds {v}: expected a positive number")),
                }
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    opts.seconds = seconds.unwrap_or(if opts.quick { 0.1 } else { 1.5 });
    Ok(Some(opts))
}

fn parse_count(flag: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} {value}: expected a positive integer")),
    }
}

/// Seconds per call of one case.
struct Timing {
    median: f64,
    min: f64,
    batch: usize,
    reps: usize,
}

/// Records `calls` rounds of `dispatches` into one recorder and returns the wall-clock
/// seconds of submitting them and waiting for the GPU to finish.
fn run_batch(ctx: &GpuContext, dispatches: &[Dispatch], calls: usize) -> glim::Result<f64> {
    let mut rec = ctx.recorder();
    for _ in 0..calls {
        for d in dispatches {
            rec.dispatch(d);
        }
    }
    let start = Instant::now();
    rec.submit_and_wait()?;
    Ok(start.elapsed().as_secs_f64())
}

/// Warms up, picks the batch size and repetitions, and times one call (`dispatches`
/// together: a GEMV over a split weight is one dispatch per chunk).
fn measure(ctx: &GpuContext, dispatches: &[Dispatch], opts: &Options) -> glim::Result<Timing> {
    // Warm-up: a single call, which also pays any first-use cost (some drivers compile the
    // shader on its first launch). Calibration: a batch long enough to amortize the submit
    // latency that dominates a single call on a fast GPU.
    let single = run_batch(ctx, dispatches, 1)?;
    let probe = ((PROBE_SECONDS / single).ceil() as usize).clamp(1, MAX_BATCH);
    let estimate = run_batch(ctx, dispatches, probe)? / probe as f64;

    let reps = opts.reps.unwrap_or_else(|| {
        let fit = (opts.seconds / estimate).floor() as usize;
        fit.clamp(opts.min_reps(), opts.default_reps())
    });
    let batch = opts.batch.unwrap_or_else(|| {
        ((opts.seconds / (reps as f64 * estimate)).round() as usize).clamp(1, MAX_BATCH)
    });

    let mut per_call = Vec::with_capacity(reps);
    for _ in 0..reps {
        per_call.push(run_batch(ctx, dispatches, batch)? / batch as f64);
    }
    per_call.sort_by(f64::total_cmp);
    let mid = per_call.len() / 2;
    let median = if per_call.len() % 2 == 1 {
        per_call[mid]
    } else {
        (per_call[mid - 1] + per_call[mid]) / 2.0
    };
    Ok(Timing {
        median,
        min: per_call[0],
        batch,
        reps,
    })
}

/// One row of the results table.
struct Row {
    label: String,
    shape: String,
    bytes: usize,
    timing: Timing,
}

impl Row {
    /// Achieved bandwidth at the median time, in GB/s (1 GB = 1e9 bytes).
    fn gbps(&self) -> f64 {
        self.bytes as f64 / self.timing.median / 1e9
    }
}

const TABLE_HEADER: &str =
    "kernel      N x K          weight MiB  median µs/call       min µs      GB/s  vs copy  batch x reps";

fn print_row(row: &Row, copy_gbps: f64) {
    println!(
        "{:<11} {:<13} {:>11.2} {:>15.1} {:>12.1} {:>9.2} {:>7.2}x  {:>5} x {}",
        row.label,
        row.shape,
        row.bytes as f64 / (1024.0 * 1024.0),
        row.timing.median * 1e6,
        row.timing.min * 1e6,
        row.gbps(),
        row.gbps() / copy_gbps,
        row.timing.batch,
        row.timing.reps,
    );
}

/// Bytes a `rows x cols` weight occupies in `format` (codes + scales), as
/// [`PackedWeight::byte_size`] counts them.
fn weight_bytes(format: WeightFormat, rows: usize, cols: usize) -> usize {
    rows * format.row_bytes(cols)
}

/// Times the copy kernel over a buffer as large as [`COPY_LIKE`]'s weights and checks that
/// it really copied.
fn bench_copy(ctx: &GpuContext, opts: &Options, rng: &mut StdRng) -> Result<Row, String> {
    let (format, rows, cols) = COPY_LIKE;
    let bytes = weight_bytes(format, rows, cols).div_ceil(16) * 16;
    let words: Vec<u32> = (0..bytes / 4).map(|_| rng.random()).collect();
    let src = ctx
        .tensor_from_u32(&words, &[words.len()])
        .map_err(|e| e.to_string())?;
    let dst = ctx
        .zeros(&[words.len()], glim::gpu::DType::U32)
        .map_err(|e| e.to_string())?;
    let kernel = KernelSource {
        label: "bench.copy".into(),
        source: assemble(Precision::F32, &[], &[COPY_WGSL]),
        entry: "copy_vec4",
        bindings: COPY_BINDINGS,
    };
    let groups = (bytes / 16).div_ceil(COPY_THREADS) as u32;
    let dispatch = ctx
        .dispatch(&kernel, &[&src.buffer, &dst.buffer], grid(groups))
        .map_err(|e| e.to_string())?;
    let dispatches = [dispatch];
    let timing = measure(ctx, &dispatches, opts).map_err(|e| e.to_string())?;
    let copied = ctx.read_u32_blocking(&dst).map_err(|e| e.to_string())?;
    if copied != words {
        return Err("the copy kernel did not reproduce its input: its timing means nothing".into());
    }
    Ok(Row {
        label: "copy".into(),
        shape: format!("{} B", bytes),
        bytes,
        timing,
    })
}

/// The two GEMV kernels: a team of threads per row (GPUs) and a thread per row (CPU adapters).
const GEMV_SHAPES: [(Shape, &str); 2] = [(Shape::Gemv, "wg"), (Shape::GemvRows, "rows")];

/// Packs `weights` in `format` (GGUF block formats: random blocks of the same shape, as
/// glim does not quantize to them), uploads them and times each GEMV kernel.
fn bench_gemv(
    ctx: &GpuContext,
    opts: &Options,
    precision: Precision,
    format: WeightFormat,
    (rows, cols): (usize, usize),
    weights: &[f32],
    x: &[f32],
) -> glim::Result<Vec<Row>> {
    let packed = match format.ggml_type() {
        Some(ty) if ty.block_size() > 1 => PackedWeight::synthetic(format, rows, cols, 1)?,
        _ => PackedWeight::quantize(format, weights, rows, cols)?,
    };
    let bytes = packed.byte_size();
    let weight = GpuWeight::upload(ctx, &packed)?;
    drop(packed);
    let xt = ctx.tensor_from_f32(x, &[cols], precision.into())?;
    let y = ctx.zeros(&[rows], precision.into())?;
    let mut out = Vec::new();
    for (shape, name) in GEMV_SHAPES {
        let dispatches = matmul::fused(ctx, &xt, &weight, &y, 1, &Fusion::NONE, shape)?;
        let timing = measure(ctx, &dispatches, opts)?;
        out.push(Row {
            label: format!("{} {name}", format.name()),
            shape: format!("{rows} x {cols}"),
            bytes,
            timing,
        });
    }
    Ok(out)
}

fn precision_name(precision: Precision) -> &'static str {
    match precision {
        Precision::F16 => "f16",
        Precision::F32 => "f32",
    }
}

fn geomean(values: &[f64]) -> f64 {
    (values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp()
}

fn run(opts: &Options) -> Result<(), String> {
    let started = Instant::now();
    let ctx = GpuContext::from_env_blocking().map_err(|e| e.to_string())?;
    let s = &ctx.summary;
    println!("glim kernel-bench");
    println!("adapter:     {} ({}, {})", s.name, s.backend, s.device_type);
    println!(
        "driver:      {}",
        if s.driver.is_empty() {
            "(not reported)"
        } else {
            &s.driver
        }
    );
    println!("shader-f16:  {}", s.shader_f16);
    let default = ctx.default_precision();
    let precision = opts.precision.unwrap_or(default);
    ctx.check_precision(precision).map_err(|e| e.to_string())?;
    println!(
        "activations: {} (adapter default: {})",
        precision_name(precision),
        precision_name(default)
    );
    let launch = matmul::GemvLaunch::for_context(&ctx);
    let [o1, o4, o8] = launch.outputs;
    println!(
        "wg launch:   {} threads per row, {} rows' teams per workgroup, {o1} outputs per thread, \
         {} (GLIM_GEMV={},{},{o1},{o4},{o8} to change)",
        launch.team,
        launch.teams,
        if launch.subgroup {
            "subgroup reduction"
        } else {
            "workgroup-memory reduction"
        },
        launch.team,
        launch.teams,
    );
    println!(
        "timing:      wall clock of submit + wait for a batch of B launches, / B; median and min over R batches, \
         ~{:.1} s per case{}",
        opts.seconds,
        if opts.quick { " (--quick)" } else { "" }
    );
    println!(
        "GB/s:        weight bytes (codes + scales) per call / time per call; 1 GB = 1e9 bytes"
    );
    println!();

    let mut rng = StdRng::seed_from_u64(0x6c69_6d62);
    let copy = bench_copy(&ctx, opts, &mut rng)?;
    let copy_gbps = copy.gbps();
    println!(
        "copy baseline: {:.2} MiB (the size of {} {}x{} weights), array<vec4<u32>> to array<vec4<u32>>",
        copy.bytes as f64 / (1024.0 * 1024.0),
        COPY_LIKE.0.name(),
        COPY_LIKE.1,
        COPY_LIKE.2
    );
    println!(
        "  {copy_gbps:.2} GB/s counting bytes read ({:.2} GB/s read + write); \"vs copy\" divides by the read figure",
        2.0 * copy_gbps
    );
    println!();
    println!("{TABLE_HEADER}");
    print_row(&copy, copy_gbps);

    let mut rows: Vec<Row> = Vec::new();
    for (i, &(n, k)) in SHAPES.iter().enumerate() {
        let mut r = StdRng::seed_from_u64(i as u64 + 1);
        let weights: Vec<f32> = (0..n * k).map(|_| r.random_range(-0.5..0.5)).collect();
        let x: Vec<f32> = (0..k).map(|_| r.random_range(-1.0..1.0)).collect();
        for format in FORMATS {
            let timed = bench_gemv(&ctx, opts, precision, format, (n, k), &weights, &x)
                .map_err(|e| format!("{} {n}x{k}: {e}", format.name()))?;
            for row in timed {
                print_row(&row, copy_gbps);
                rows.push(row);
            }
        }
    }
    // Timed again last: the two copy rows together show how much the device's speed drifted
    // during the run (e.g. from other load on a software adapter). Ratios use the first.
    let mut copy_again = bench_copy(&ctx, opts, &mut rng)?;
    copy_again.shape = "(again, last)".into();
    print_row(&copy_again, copy_gbps);

    println!();
    println!("summary (over the {} shapes):", SHAPES.len());
    let labels = FORMATS
        .iter()
        .flat_map(|f| GEMV_SHAPES.map(|(_, name)| format!("{} {name}", f.name())));
    for label in labels {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.label == label).collect();
        let gbps: Vec<f64> = mine.iter().map(|r| r.gbps()).collect();
        let ratios: Vec<f64> = gbps.iter().map(|g| g / copy_gbps).collect();
        let (lo, hi) = ratios.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &r| {
            (lo.min(r), hi.max(r))
        });
        println!(
            "{:<11} geomean {:>8.2} GB/s = {:.2}x copy (per shape {:.2}x to {:.2}x)",
            label,
            geomean(&gbps),
            geomean(&ratios),
            lo,
            hi
        );
    }
    println!(
        "copy        {copy_gbps:>16.2} GB/s read ({:.2} GB/s read + write); {:.2} GB/s when timed again at the end",
        2.0 * copy_gbps,
        copy_again.gbps()
    );
    println!();
    println!("total run time: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kernel-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernel-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
