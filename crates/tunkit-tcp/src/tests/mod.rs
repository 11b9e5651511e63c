//! The crate's tests beyond the per-module unit tests: a scripted peer against one endpoint (every state
//! transition, RST in each state, PAWS, wrap-around, zero window), a simulated link between two endpoints
//! (lossy multi-MiB transfers, TSO, budget), and seeded fuzzers (`cargo test -p tunkit-tcp -- --nocapture`
//! prints their counts).

mod script;
mod sim;
mod util;

mod data;
mod endpoint;
mod fuzz;
mod resets;
mod states;
mod transfer;
