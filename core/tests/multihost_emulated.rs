//! The multi-host suite of `multihost.rs` again, with every child process an emulated
//! non-coherent host (Flush mode, payloads through a private view; see `harness::emulated`).
//! (`multihost.rs` keeps its description in plain comments so that it can be included here.)

include!("multihost.rs");
