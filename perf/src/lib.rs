//! ferroswitch benchmarks and harnesses.
