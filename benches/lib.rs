//! Criterion benchmarks live in this package.
