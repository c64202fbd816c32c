//! Every fuzz target over its committed corpus (the seeds and each input a fuzzer found a
//! fault with), and over deterministic mutations of it: the short run `cargo test` does.
//! A target must come back from each input; the whole replay has a time limit, so a hang
//! fails the test instead of stalling the run. Coverage-guided runs: fuzz/README.md.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

/// Mutations of each corpus file per target.
const MUTATIONS: usize = 48;

/// `seed` changed a few times over: bytes flipped, set to edge values, cut out, duplicated
/// or spliced, as a fuzzer's havoc stage does.
fn mutate(seed: &[u8], rng: &mut u64) -> Vec<u8> {
    let mut next = |n: usize| {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        (*rng % n.max(1) as u64) as usize
    };
    let mut data = seed.to_vec();
    for _ in 0..1 + next(4) {
        if data.is_empty() {
            data.push(0);
        }
        let at = next(data.len());
        match next(6) {
            0 => data[at] ^= 1 << next(8),
            1 => data[at] = [0, 0xff, 0x7f, 0x80, b'{', b'"'][next(6)],
            2 => {
                let end = (at + 1 + next(16)).min(data.len());
                data.drain(at..end);
            }
            3 => {
                let end = (at + 1 + next(16)).min(data.len());
                let piece = data[at..end].to_vec();
                let to = next(data.len());
                data.splice(to..to, piece);
            }
            4 => data.truncate(at),
            _ => {
                // A 32-bit little-endian field set to an edge value (sizes and counts).
                let word = [0u32, 1, 0x7fff_ffff, 0xffff_ffff][next(4)].to_le_bytes();
                for (i, b) in word.iter().enumerate() {
                    if let Some(d) = data.get_mut(at + i) {
                        *d = *b;
                    }
                }
            }
        }
    }
    data
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let mut counts = Vec::new();
        for (name, target) in glim_fuzz::TARGETS {
            let dir = root.join(name);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "{name}: no corpus");
            let mut rng = 0x9E37_79B9_7F4A_7C15u64;
            let mut runs = 0;
            for file in &files {
                let seed = std::fs::read(file).unwrap();
                target(&seed);
                for _ in 0..MUTATIONS {
                    target(&mutate(&seed, &mut rng));
                }
                runs += 1 + MUTATIONS;
            }
            counts.push(format!("{name}: {runs}"));
        }
        let _ = done.send(counts);
    });
    match finished.recv_timeout(Duration::from_secs(600)) {
        Ok(counts) => eprintln!("inputs run: {}", counts.join(", ")),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("a target ran past 10 minutes (a hang?)"),
        // The thread panicked: a target did; its message is above.
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("a target panicked"),
    }
}
