//! `glim-fuzz TARGET [FILE...]`: built with `--features afl` and run under `cargo afl fuzz`,
//! feeds AFL++'s inputs to TARGET (see fuzz/README.md); without the feature, runs TARGET
//! on each FILE, to replay one input by hand.

fn main() {
    let mut args = std::env::args().skip(1);
    let names: Vec<&str> = glim_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
    let Some(target) = args.next().as_deref().and_then(glim_fuzz::target) else {
        eprintln!(
            "usage: glim-fuzz TARGET [FILE...]; targets: {}",
            names.join(", ")
        );
        std::process::exit(2);
    };
    // Without AFL's panic hook: a panic glim catches itself (inside the tokenizers
    // library, turned into an error) is handled; one that escapes the target still aborts.
    #[cfg(feature = "afl")]
    afl::fuzz_nohook!(|data: &[u8]| target(data));
    #[cfg(not(feature = "afl"))]
    for path in args {
        match std::fs::read(&path) {
            Ok(data) => target(&data),
            Err(e) => eprintln!("{path}: {e}"),
        }
    }
}
