//! Placeholder binary until the cli lands.
fn main() {}
