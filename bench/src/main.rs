//! `shardgate-bench`: the benchmark harness (see README.md). The scenarios
//! arrive with the benchmark issue; this binary says so rather than
//! pretending to measure anything.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("shardgate-bench: no scenarios yet (see bench/README.md)");
    std::process::exit(2);
}
