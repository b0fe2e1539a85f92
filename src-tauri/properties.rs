//! What every property test shares: a fixed seed and no failure files, so a failing case comes
//! back on every run with its shrunk input, in CI as on a laptop.

use proptest::test_runner::{Config as ProptestConfig, RngSeed};

/// `cases` cases from the one fixed seed.
pub fn seeded(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(11),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
