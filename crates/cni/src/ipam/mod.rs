//! IP address management in the style of the reference `host-local` plugin.

pub mod range;
pub mod store;
