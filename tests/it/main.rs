//! One integration-test binary; each area is a submodule.

mod pds;
