//! Client code per external system, shared by every input and output that talks to it, so an
//! input and an output of one system never duplicate connection handling.

pub mod http;
